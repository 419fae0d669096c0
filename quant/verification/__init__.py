"""Verification of an integer program: every backend op by op at zero tolerance, and fast simulation against it."""

from quant.verification.verifier import Divergence, OpCheck, VerificationReport, verify

__all__ = ["Divergence", "OpCheck", "VerificationReport", "verify"]
