"""Tests of quant/sim."""
