"""Tests of quant/ir."""
