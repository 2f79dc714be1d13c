"""One module per concern: data, transforms, policies, evaluation, Grad-CAM, plots ..."""
