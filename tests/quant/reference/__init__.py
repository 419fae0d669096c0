"""Tests of quant/reference."""
