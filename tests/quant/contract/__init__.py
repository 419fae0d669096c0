"""Tests of quant/contract."""
