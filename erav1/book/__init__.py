"""The book: chapters executed by papermill, stamped with Colab links, built by jupyter-book.

* :mod:`erav1.book.layout`: where the book lives and what ``_config.yml`` says (the repository URL);
* :mod:`erav1.book.stamp`: the Colab badge and install cell of every chapter;
* :mod:`erav1.book.parameters`: profiles, ``-p`` overrides and the chapters' ``parameters`` cells;
* :mod:`erav1.book.execute`: one chapter through papermill, and what a failure says;
* :mod:`erav1.book.tidy`: outputs made fit to publish (progress bars, hidden cells);
* :mod:`erav1.book.results`: the results table generated from ``book/results/summary.json``;
* :mod:`erav1.book.build`: the jupyter-book build;
* :mod:`erav1.book.runner`: ``erav1 book``, which strings them together.

Only the runner and the executor need papermill and jupyter-book, and they import
them when called, so ``pip install erav1`` in Colab does not need the book extras.
"""
