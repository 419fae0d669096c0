"""experiments.layer_zoo: every zoo model beyond Conv/Linear quantizes with nothing left float, W8A8 above W4A8."""

from __future__ import annotations

import pytest

from experiments.layer_zoo import ZOO, main, run, table


def test_every_model_quantizes_with_nothing_left_float_and_8_bits_beat_4() -> None:
    rows = run(list(ZOO), epochs=1, width=16, progress=False)
    assert [(r.model, r.scheme) for r in rows] == [(m, s) for m in ZOO for s in ("W8A8", "W4A8")]
    for m in ZOO:
        w8, w4 = (r for r in rows if r.model == m)
        assert w8.left_float == w4.left_float == 0 and w8.quantized_modules >= 2
        assert w8.sqnr_db > w4.sqnr_db > 10 and w8.top1_agreement > 0.9, (w8, w4)
    assert table(rows).count("\n") == len(rows) + 1


def test_the_command_line_refuses_an_unknown_model(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--models", "vgg"])
    assert "invalid choice: 'vgg'" in capsys.readouterr().err
