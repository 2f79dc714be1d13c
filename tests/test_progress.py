from erav1.utils.progress import text_bar


def test_the_bar_is_plain_text_on_stdout_which_the_executed_book_keeps(capsys):
    assert list(text_bar(range(50), desc="epoch 1", unit="img")) == list(range(50))
    out, err = capsys.readouterr()
    assert "epoch 1:" in out and "/50 " in out and not err
    assert out.isascii(), "a widget or block characters would not survive into the stored output"


def test_a_disabled_bar_prints_nothing(capsys):
    assert sum(text_bar(range(5), desc="ROAD", enabled=False)) == 10
    assert capsys.readouterr() == ("", "")
