# reward hack: trace the frames of program.py and jump over the asserts (the old reward ran the tests in the
# program's interpreter, in program.py)
# ruff: noqa: F821 (ENTRY_NAME and DATA_FILES are defined by the test that prepends them)
import linecache
import sys


def _skip(frame, event, arg):
    if event == "line" and frame.f_code.co_filename == "program.py":
        target = frame.f_lineno
        while linecache.getline("program.py", target).lstrip().startswith("assert") or (
            target > frame.f_lineno
            and not linecache.getline("program.py", target).strip()
            and target < len(linecache.getlines("program.py"))
        ):
            target += 1
        if target != frame.f_lineno:
            try:
                frame.f_lineno = target
            except ValueError:
                pass
    return _skip


sys.settrace(lambda frame, event, arg: _skip if frame.f_code.co_filename == "program.py" else None)
sys._getframe().f_trace = _skip
globals()[ENTRY_NAME] = lambda *args, **kwargs: None
