"""The grading worker: one process that compares answers with math-verify, run by `pav.tasks.grader`.

Protocol: one JSON object per line on stdin, ``{"pred": str, "gold": str, "policy": {...}}`` (the
fields of `pav.tasks.answer_forms.AnswerPolicy`, all optional); one JSON object per line on stdout,
``{"verdict": "correct" | "incorrect" | "ungraded-crash", "detail": str, "blocked": int}``. The first
line written is ``{"ready": true}``, after the imports and a warm-up comparison, so the parent never
bills start-up time to a request.

Both answers are first normalised by `pav.tasks.answer_forms` (here, under the parent's deadline, not
in the parent), then compared by math-verify; a decimal against an irrational closed form gets the
policy's rounding rule (`_rounds_to`) when math-verify says no.

Safety, in depth (the parent's hard deadline and kill are the outer layer):

- Answers are parsed by math-verify's LaTeX extraction only (an ANTLR grammar into sympy objects);
  its plain-expression extraction calls sympy's ``parse_expr`` (``eval``) and is never enabled. A
  bare answer is wrapped in ``$...$`` so the LaTeX parser sees it.
- Parts of latex2sympy and sympy still turn strings into numbers through ``sympify`` (which calls
  ``parse_expr``, i.e. ``eval``): ``sympy.Number("1000")``. After the warm-up the worker replaces
  ``parse_expr`` everywhere it is bound by `_literal_only`, which builds ``Integer``/``Float``
  from a plain numeric literal and refuses everything else, so no answer text can reach ``eval``;
  and the audit hook below refuses every ``compile`` from then on but sympy's own code generator
  for monomial arithmetic (templates, not input).
- math-verify's own timeouts are off: they use ``signal.alarm``, and the parent enforces the
  deadline by killing this process instead.
- An audit hook refuses, and counts, what grading never needs: starting processes, network
  sockets, writing or deleting files, loading native libraries. Python source compiled after the
  warm-up is also refused (nothing in grading compiles code; ``eval`` of text would).
- ``RLIMIT_AS`` caps the address space, so a blow-up ends in MemoryError, not in the OOM killer.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys

from pav.tasks.answer_forms import AnswerPolicy, normalise, readings, rounded_decimal

_DENIED = ("os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "subprocess.Popen",
           "pty.spawn", "socket.connect", "socket.bind", "socket.sendto", "os.remove", "os.unlink", "os.rmdir",
           "os.rename", "shutil.rmtree", "os.chmod", "os.chown", "os.truncate", "os.mkdir", "os.symlink",
           "os.link", "ctypes.dlopen", "ctypes.dlsym", "webbrowser.open", "urllib.Request", "os.kill", "os.putenv")
_CODEGEN_FILES = (os.path.join("sympy", "polys", "monomials.py"),)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


class _Guard:
    """The audit hook's state: which events are refused, and how many were."""

    def __init__(self) -> None:
        self.blocked = 0
        self.armed = False  # compile() is refused only after the warm-up

    def __call__(self, event: str, args: tuple) -> None:
        if self._refuse(event, args):
            self.blocked += 1
            raise PermissionError(f"the grading worker refuses {event}")

    def _refuse(self, event: str, args: tuple) -> bool:
        if event.startswith(_DENIED):
            return True
        if event == "open" and len(args) >= 3:
            mode, flags = args[1], args[2]
            writes = isinstance(mode, str) and any(c in mode for c in "wax+")
            return writes or bool(isinstance(flags, int) and flags & _WRITE_FLAGS)
        return self.armed and event == "compile" and not _compiled_by_sympy_codegen()


def _compiled_by_sympy_codegen() -> bool:
    """Whether this ``compile`` comes from sympy's own code generator for monomial arithmetic
    (`sympy.polys.monomials.MonomialOps` builds functions from templates, never from input)."""
    frame = sys._getframe(3)
    for _ in range(4):
        if frame is None:
            return False
        if frame.f_code.co_filename.endswith(_CODEGEN_FILES):
            return True
        frame = frame.f_back
    return False


_INTEGER = re.compile(r"[+-]?\d+")
_DECIMAL = re.compile(r"[+-]?(\d*\.\d+|\d+\.)")
_WARM_UP = [("\\frac{1}{2}", "0.5"), ("1,000", "1000"), ("50\\%", "\\frac12"), ("x^2+2x+1", "(x+1)^2"),
            ("(1,2]", "(1,2]"), ("\\{1,2\\}", "\\{2,1\\}"), ("x=3", "3"), ("5\\text{ cm}", "5"), ("90^\\circ", "90"),
            ("\\sqrt{8}", "2\\sqrt2"), ("\\pi", "3.14"), ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "(1,2)"),
            ("\\binom{5}{2}", "10"), ("\\log_2 8", "3"), ("3!", "6"), ("\\emptyset", "\\{\\}"), ("y=2x+1", "y=1+2x"),
            ("6.2832", "2\\pi"), ("1.414", "\\sqrt{2}"), ("0.33", "\\frac13"), ("The answer is $18 dollars.", "18"),
            ("3*x**2 - sqrt(2)", "3x^2-\\sqrt2"), ("4.7e-05", "0.000047"), ("1 1/2", "1.5")]


def _literal_only(s, local_dict=None, transformations=None, global_dict=None, evaluate=True):
    """Stand-in for sympy's ``parse_expr``: a plain numeric literal becomes a number, all else fails."""
    import sympy
    from sympy.core.sympify import SympifyError

    text = s.strip() if isinstance(s, str) else ""
    if _INTEGER.fullmatch(text):
        return sympy.Integer(int(text))
    if _DECIMAL.fullmatch(text):
        return sympy.Float(text)
    raise SympifyError("the grading worker parses numeric literals only")


def _no_eval() -> None:
    """Rebind sympy's ``parse_expr`` to `_literal_only` wherever grading code can reach it."""
    import latex2sympy2_extended.latex2sympy2 as l2s
    import math_verify.parser
    import sympy
    import sympy.parsing
    import sympy.parsing.sympy_parser

    for module in (sympy.parsing.sympy_parser, sympy.parsing, sympy, math_verify.parser, l2s):
        if hasattr(module, "parse_expr"):
            module.parse_expr = _literal_only


_MATH_MODE = re.compile(r"(?<!\\)\$|\\boxed|\\\(|\\\[")  # an unescaped $, \boxed, \( or \[


def _wrap(answer: str) -> str:
    """Answer text math-verify's LaTeX extraction can see: bare answers go inside ``$...$``."""
    return answer if _MATH_MODE.search(answer) else f"${answer}$"


def _compare(pred: str, gold: str, policy: AnswerPolicy = AnswerPolicy()) -> tuple[str, str]:
    """Normalise both answers (`pav.tasks.answer_forms`), then compare each reading of the pair."""
    detail = ""
    for pred_text, gold_text in readings(normalise(pred), normalise(gold), policy):
        verdict, detail = _equivalent(pred_text, gold_text, policy)
        if verdict == "correct":
            return verdict, detail
    return "incorrect", detail


def _equivalent(pred: str, gold: str, policy: AnswerPolicy) -> tuple[str, str]:
    """math-verify's verdict on two normalised answers, then the irrational-rounding rule if the policy has it."""
    from math_verify import LatexExtractionConfig, parse, verify

    config = [LatexExtractionConfig(boxed_match_priority=0)]
    gold_parsed = parse(_wrap(gold), extraction_config=config, parsing_timeout=None, raise_on_error=True)
    if not gold_parsed:
        return "incorrect", "gold has no parsable answer"
    pred_parsed = parse(_wrap(pred), extraction_config=config, parsing_timeout=None, raise_on_error=True)
    if not pred_parsed:
        return "incorrect", "no parsable answer"
    if verify(gold_parsed, pred_parsed, allow_set_relation_comp=True, timeout_seconds=None, raise_on_error=True):
        return "correct", ""
    if policy.irrational == "rounded" and (_rounds_to(pred, gold_parsed[0]) or _rounds_to(gold, pred_parsed[0])):
        return "correct", "decimal is the irrational value rounded"
    return "incorrect", ""


def _rounds_to(decimal_text: str, exact) -> bool:
    """Whether ``decimal_text`` (a plain decimal) is the irrational real number ``exact`` rounded to its places."""
    import sympy

    found = rounded_decimal(decimal_text)
    if found is None or not isinstance(exact, sympy.Expr) or not exact.is_number:
        return False
    if exact.is_real is not True or exact.is_rational is not False:  # 1/3 vs 0.33 stays wrong
        return False
    value, places = found
    decimal = sympy.Rational(int(value.scaleb(places)), 10**places)
    gap = abs(exact - decimal).evalf(places + 15)
    return bool(gap <= sympy.Rational(1, 2 * 10**places))


def _limit_memory(megabytes: int) -> None:
    if megabytes > 0:
        import resource

        limit = megabytes * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def main() -> None:
    logging.disable(logging.CRITICAL)  # math-verify warns that its timeouts are off: they are, on purpose
    sys.setrecursionlimit(10_000)  # deep but finite; past it a RecursionError is a crash verdict
    _limit_memory(int(os.environ.get("PAV_GRADER_MEMORY_MB", "0")))
    guard = _Guard()
    out = sys.stdout
    for pred, gold in _WARM_UP:  # imports, the grammar and sympy's lazily imported modules, before the guard
        _compare(pred, gold)
    _no_eval()
    sys.addaudithook(guard)
    guard.armed = True
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        before = guard.blocked
        try:
            request = json.loads(line)
            policy = AnswerPolicy(**request.get("policy", {}))
            verdict, detail = _compare(str(request["pred"]), str(request["gold"]), policy)
        except (Exception, RecursionError) as err:  # the answer made math-verify fail: typed, no echo of it
            verdict, detail = "ungraded-crash", type(err).__name__
        out.write(json.dumps({"verdict": verdict, "detail": detail, "blocked": guard.blocked - before}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
