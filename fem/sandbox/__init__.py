"""Running untrusted Python (model-written programs) and the trusted tests that judge them.

Public API: ``run_program(code, config)`` runs one program; ``run_tests(code, suite, config)`` runs a program
against a trusted ``TestSuite`` with the two in separate jails linked by plain-data pipes (``protocol``), the
verdict on a channel the program does not hold; ``describe(config)`` says in one line which isolation code
rewards get here (or why they are refused); ``SandboxUnavailable`` is raised when the isolation asked for
(bubblewrap, by default) cannot run here.

Modules: ``config`` (limits, results), ``jail`` (bubblewrap / fallback, throwaway uids), ``supervisor`` (start,
watch, kill, classify), and the two files that run inside the jail: ``protocol`` and ``bootstrap``.
What each isolation contains, and what it does not: docs/RELIABILITY.md.
"""

from .config import ENV, MODES, SandboxConfig, SandboxResult, SandboxUnavailable, TestSuite
from .jail import bwrap_jail, describe, namespace_prefix, resolve_jail
from .supervisor import run_program, run_tests

__all__ = [
    "ENV",
    "MODES",
    "SandboxConfig",
    "SandboxResult",
    "SandboxUnavailable",
    "TestSuite",
    "bwrap_jail",
    "describe",
    "namespace_prefix",
    "resolve_jail",
    "run_program",
    "run_tests",
]
