"""Tests of quant/lowering."""
