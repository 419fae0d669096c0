"""The fuzzing harness of the C extension: ``python -m tests.fuzz`` (``make fuzz``), and a short run in the suite.

Hypothesis draws cases for every entry point (:mod:`tests.fuzz.targets`); a fork server
(:mod:`tests.fuzz.server`) runs them in a forked worker so that a crash or a hang is recorded with its
case; with ``--sanitize`` the extension and the C core are rebuilt with ``-fsanitize=address,undefined``
(:mod:`tests.fuzz.sanitized`) and the run happens under them. See ``docs/fuzzing.md``.
"""
