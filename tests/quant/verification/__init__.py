"""Tests of quant/verification."""
