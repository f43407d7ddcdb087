# -*- test-case-name: dmq.test.test_examples -*-
"""
The examples of the documentation run: every fenced block of C{README.md}
and C{doc/*.md} is run here, or marked as an excerpt, and the program of
C{doc/examples/} runs as a bus of three.

The rule (also in C{doc/design.md}):

  - every fenced block says its language (C{```sh}, C{```python},
    C{```text}, C{```toml}, C{```kamailio}, ...); a fence without one fails;
  - C{python}, C{sh}, C{shell}, C{bash} and C{console} blocks are run, in
    the order of their file, in one fresh virtualenv in which nothing is
    installed until a block runs C{pip install .}, from a copy of the
    checkout; a C{twistd -n} command keeps running (in the background,
    until its block is done; the next command runs once it logs that it
    listens), every other command must exit 0 within a minute, and a
    Python block must exit 0 by itself;
  - C{toml} blocks are read as C{--config} files;
  - a block that cannot run (a fragment, another machine's addresses, a
    command that runs the suite) is preceded by C{<!-- excerpt -->} (a
    reason may follow: C{<!-- excerpt: needs Kamailio -->});
  - a block preceded by C{<!-- output -->} is what the runnable block
    before it prints: each of its lines must be in that output;
  - an indented (not fenced) block that reads as a command or Python fails:
    fence it.

The running tests bind 127.0.0.1, .11, .12 (the README's addresses) and
.141 to .143 and TCP port 5080: run this module under the test lock.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from typing import Dict, List, Optional, Tuple

import attr
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from dmq.config import readConfigFile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RUNNABLE = {"python", "sh", "shell", "bash", "console"}
SHELL = RUNNABLE - {"python"}

# Seconds a command, a Python block, or a node's start may take.
COMMAND_TIMEOUT = 120.0
START_TIMEOUT = 60.0

_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})\s*([^`\s]*)")
_MARKER = re.compile(r"^\s*<!--\s*(excerpt|output)\b[^>]*-->\s*$")
_CODE_START = re.compile(r"^(\$ |twistd\b|dmqctl\b|pip\b|python3?\b|pypy3?\b|curl\b|import \w|from \w+ import\b)")
_SERVER = re.compile(r"\btwistd\b[^|;&]*\s(-n|--nodaemon)\b")


@attr.frozen
class Block:
    """
    A fenced block of a Markdown document.

    @ivar line: the line number of its opening fence.
    @ivar language: the first word after the fence, or C{""}.
    @ivar marker: C{"excerpt"}, C{"output"} or C{None}: the comment on the
        last non-blank line before the fence.
    """

    path: str
    line: int
    language: str
    text: str
    marker: Optional[str]


def readBlocks(path: str, text: str) -> Tuple[List[Block], List[str]]:
    """
    The fenced blocks of a Markdown document, and what breaks the rule
    outside them (indented blocks that read as code).
    """
    blocks: List[Block] = []
    problems: List[str] = []
    lines = text.splitlines()
    i = 0
    previous = ""
    blankBefore = True
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence is not None:
            closing = fence.group(2)
            body = []
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith(closing):
                body.append(lines[j][len(fence.group(1)):] if lines[j].startswith(fence.group(1)) else lines[j])
                j += 1
            marker = _MARKER.match(previous)
            blocks.append(
                Block(path, i + 1, fence.group(3).lower(), "\n".join(body) + "\n", marker and marker.group(1))
            )
            previous, blankBefore, i = lines[min(j, len(lines) - 1)], False, j + 1
            continue
        if line.startswith("    ") and blankBefore and _CODE_START.match(line[4:]):
            problems.append(f"{path}:{i + 1}: an indented block of code: fence it (see dmq/test/test_examples.py)")
        if line.strip():
            previous = line
        blankBefore = not line.strip()
        i += 1
    return blocks, problems


def checkBlocks(blocks: List[Block]) -> List[str]:
    """
    What breaks the rule among C{blocks}: fences without a language, and
    output blocks that follow no runnable block.
    """
    problems = []
    runnable = False
    for block in blocks:
        where = f"{block.path}:{block.line}"
        if not block.language:
            problems.append(f"{where}: a fence without a language (```sh, ```python, ```text, ...)")
        if block.marker == "output" and not runnable:
            problems.append(f"{where}: an output block after no runnable block")
        runnable = block.language in RUNNABLE and block.marker is None
    return problems


def documents() -> List[str]:
    """
    The documents checked: C{README.md} and C{doc/*.md}, relative to the
    checkout.
    """
    if not os.path.exists(os.path.join(ROOT, "README.md")):
        raise SkipTest("not run from a checkout: no README.md beside dmq/")
    doc = os.path.join(ROOT, "doc")
    return ["README.md"] + sorted(
        os.path.join("doc", name) for name in os.listdir(doc) if name.endswith(".md")
    )


def _read(relative: str) -> str:
    with open(os.path.join(ROOT, relative), encoding="utf-8") as f:
        return f.read()


def shellCommands(block: Block) -> List[str]:
    """
    The commands of a shell block: lines joined at a trailing C{\\},
    comments and blank lines left out; in a C{console} block, only the
    lines after C{$ } (and their continuations).
    """
    commands: List[str] = []
    pending = ""
    for line in block.text.splitlines():
        if not pending:
            if block.language == "console":
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            if not line.strip() or line.lstrip().startswith("#"):
                continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        commands.append(pending + line)
        pending = ""
    if pending:
        commands.append(pending)
    return commands


class MarkdownTests(SynchronousTestCase):
    """
    The reader of the rule's blocks.
    """

    def test_fencesAndMarkers(self) -> None:
        """
        Fenced blocks are found with their language and the marker before them.
        """
        text = "intro\n\n```sh\necho hi\n```\n\n<!-- excerpt: why -->\n```python\nx = 1\n```\n" \
            "<!-- output -->\n~~~text\nhi\n~~~\n"
        blocks, problems = readBlocks("x.md", text)
        self.assertEqual(problems, [])
        self.assertEqual(
            [(b.line, b.language, b.text, b.marker) for b in blocks],
            [(3, "sh", "echo hi\n", None), (8, "python", "x = 1\n", "excerpt"), (12, "text", "hi\n", "output")],
        )

    def test_unlabelledFence(self) -> None:
        """
        A fence without a language breaks the rule.
        """
        blocks, _ = readBlocks("x.md", "```\ntwistd -n dmq\n```\n")
        self.assertEqual(checkBlocks(blocks), ["x.md:1: a fence without a language (```sh, ```python, ```text, ...)"])

    def test_outputAfterExcerpt(self) -> None:
        """
        An output block must follow a block that runs.
        """
        blocks, _ = readBlocks("x.md", "<!-- excerpt -->\n```sh\nls\n```\n<!-- output -->\n```text\nx\n```\n")
        self.assertEqual(checkBlocks(blocks), ["x.md:6: an output block after no runnable block"])

    def test_indentedCode(self) -> None:
        """
        An indented block that reads as a command is refused; indented prose
        and list continuations are not.
        """
        _, problems = readBlocks("x.md", "text\n\n    twistd -n dmq\n\n- item\n    continued\n\n    {\"a\":1}\n")
        self.assertEqual(problems, ["x.md:3: an indented block of code: fence it (see dmq/test/test_examples.py)"])

    def test_shellCommands(self) -> None:
        """
        Continuations are joined; comments, blanks and console output are left out.
        """
        sh = Block("x.md", 1, "sh", "# start\ntwistd -n dmq \\\n    --x 1\n\ndmqctl nodes  # ask\n", None)
        self.assertEqual(shellCommands(sh), ["twistd -n dmq      --x 1", "dmqctl nodes  # ask"])
        console = Block("x.md", 1, "console", "$ curl -s \\\n  http://x\n{\"ok\":1}\n$ ls\n", None)
        self.assertEqual(shellCommands(console), ["curl -s    http://x", "ls"])


class DocumentRuleTests(SynchronousTestCase):
    """
    The documents of the checkout keep the rule.
    """

    def test_everyBlockLabelled(self) -> None:
        """
        Every fence has a language, every output block follows a runnable
        one, and no code hides in an indented block.
        """
        problems = []
        for path in documents():
            blocks, found = readBlocks(path, _read(path))
            problems += found + checkBlocks(blocks)
        self.assertEqual(problems, [])

    def test_configBlocks(self) -> None:
        """
        A C{toml} block that is not an excerpt is a config file that
        C{--config} reads.
        """
        checked = 0
        for path in documents():
            for block in readBlocks(path, _read(path))[0]:
                if block.language != "toml" or block.marker is not None:
                    continue
                with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
                    f.write(block.text)
                self.addCleanup(os.remove, f.name)
                readConfigFile(f.name)
                checked += 1
        self.assertGreater(checked, 0)


_FIXTURE: Dict[str, str] = {}


def _fixture() -> Dict[str, str]:
    """
    A copy of the checkout and a fresh virtualenv, made once per process
    and removed at its exit: what a new user has before the README's first
    command.
    """
    if not _FIXTURE:
        base = tempfile.mkdtemp(prefix="dmq-examples-")
        atexit.register(shutil.rmtree, base, True)
        checkout = os.path.join(base, "dmq")
        shutil.copytree(
            ROOT, checkout,
            ignore=shutil.ignore_patterns(
                ".git", "_trial_temp*", "__pycache__", "build", "dist", "*.egg-info", "*.pid", "dropin.cache"
            ),
        )
        venv = os.path.join(base, "venv")
        subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=COMMAND_TIMEOUT)
        _FIXTURE.update(base=base, checkout=checkout, venv=venv)
    return _FIXTURE


def _environment(fixture: Dict[str, str]) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    bin = os.path.join(fixture["venv"], "bin")
    env.update(PATH=bin + os.pathsep + env.get("PATH", ""), VIRTUAL_ENV=fixture["venv"], PYTHONUNBUFFERED="1")
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_ROOT_USER_ACTION"] = "ignore"
    return env


class _Background:
    """
    A command left running: its output read by a thread, an event set when
    it shows C{ready}.
    """

    def __init__(self, command: str, ready: str, env: Dict[str, str], cwd: str) -> None:
        self.command = command
        self.output: List[str] = []
        self.ready = threading.Event()
        # Whether it said it was ready (the event is set at its end too).
        self.started = False
        self.process = subprocess.Popen(
            ["bash", "-c", command], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, text=True,
        )
        self._reader = threading.Thread(target=self._read, args=(ready,), daemon=True)
        self._reader.start()

    def _read(self, ready: str) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            if ready in line:
                self.started = True
                self.ready.set()
        self.ready.set()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._reader.join(10)


def runBlocks(case: SynchronousTestCase, path: str, text: Optional[str] = None) -> int:
    """
    Run the runnable blocks of the document C{path} (or of C{text}), in
    order, failing C{case} at the first that fails.

    @return: how many blocks ran.
    """
    fixture = _fixture()
    env = _environment(fixture)
    cwd = fixture["checkout"]
    blocks = readBlocks(path, _read(path) if text is None else text)[0]
    output = ""
    ran = 0
    for block in blocks:
        where = f"{block.path}:{block.line}"
        if block.marker == "output":
            for line in block.text.splitlines():
                if line.strip() and line.strip() not in output:
                    case.fail(f"{where}: {line.strip()!r} is not in the output of the block before:\n{output}")
            continue
        if block.language not in RUNNABLE or block.marker is not None:
            continue
        ran += 1
        if block.language == "python":
            program = os.path.join(fixture["base"], "example.py")
            with open(program, "w", encoding="utf-8") as f:
                f.write(block.text)
            output = _run(case, where, [os.path.join(fixture["venv"], "bin", "python"), program], env, cwd)
            continue
        background: List[_Background] = []
        try:
            output = ""
            for command in shellCommands(block):
                if _SERVER.search(command):
                    server = _Background(command, "listening on ", env, cwd)
                    background.append(server)
                    if not server.ready.wait(START_TIMEOUT) or not server.started or server.process.poll() is not None:
                        case.fail(f"{where}: {command!r} did not start:\n{''.join(server.output)}")
                else:
                    output += _run(case, where, ["bash", "-c", command], env, cwd)
        finally:
            for server in reversed(background):
                server.stop()
    return ran


def _run(case: SynchronousTestCase, where: str, argv: List[str], env: Dict[str, str], cwd: str) -> str:
    try:
        done = subprocess.run(
            argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, timeout=COMMAND_TIMEOUT,
        )
    except subprocess.TimeoutExpired as e:
        case.fail(f"{where}: {argv[-1]!r} did not end within {COMMAND_TIMEOUT:g} s:\n{e.output}")
    if done.returncode != 0:
        case.fail(f"{where}: {argv[-1]!r} exited {done.returncode}:\n{done.stdout}")
    return done.stdout


class RunDocumentsTests(SynchronousTestCase):
    """
    The runnable blocks of each document run, in one fresh virtualenv (see
    the module's docstring).  One test per document; the README first, since
    its first block installs dmq.
    """

    def test_failures(self) -> None:
        """
        A block that fails, a command that fails, a server that does not
        start and an output that was not printed each fail the test.
        """
        for text in [
            "```python\nraise SystemExit(3)\n```\n",
            "```sh\ntrue\nfalse\n```\n",
            "```sh\ntwistd -n dmq --server-address sip:192.0.2.1:5060\n```\n",
            "```python\nprint('hello')\n```\n<!-- output -->\n```text\ngoodbye\n```\n",
        ]:
            self.assertRaises(self.failureException, runBlocks, self, "x.md", text)
        self.assertEqual(
            runBlocks(self, "x.md", "```python\nprint('hello')\n```\n<!-- output -->\n```text\nhello\n```\n"), 1
        )

    def test_documentsCovered(self) -> None:
        """
        Every document has its test here.
        """
        self.assertEqual(sorted(documents()), sorted(_DOCUMENT_TESTS.values()))


def _documentTest(path: str):
    def test(self: RunDocumentsTests) -> None:
        if path != "README.md" and not _FIXTURE.get("installed"):
            # Every other document starts where the README leaves a user.
            runBlocks(self, "README.md")
        runBlocks(self, path)
        _FIXTURE["installed"] = "yes"

    test.__doc__ = f"The examples of {path} run."
    return test


def _testName(path: str) -> str:
    # README.md first: trial runs a class's tests in name order.
    stem = os.path.splitext(os.path.basename(path))[0]
    return "test_0README" if path == "README.md" else f"test_doc_{re.sub(r'[^0-9A-Za-z]', '_', stem)}"


try:
    _DOCUMENT_TESTS = {_testName(path): path for path in documents()}
except SkipTest:
    _DOCUMENT_TESTS = {}
for _name, _path in _DOCUMENT_TESTS.items():
    setattr(RunDocumentsTests, _name, _documentTest(_path))


class RateCountExampleTests(SynchronousTestCase):
    """
    C{doc/examples/ratecount.py} runs as a bus of three on loopback, as its
    docstring says.
    """

    def test_busOfThree(self) -> None:
        """
        Three nodes hitting 1, 2 and 3 times a second each report 6 hits,
        from 3 nodes.
        """
        program = os.path.join(ROOT, "doc", "examples", "ratecount.py")
        if not os.path.exists(program):
            raise SkipTest("not run from a checkout")
        env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
        seed = "sip:127.0.0.141:5060"
        commands = [
            f"{sys.executable} {program} {seed} --hits 1",
            f"{sys.executable} {program} sip:127.0.0.142:5060 --seed {seed} --hits 2",
            f"{sys.executable} {program} sip:127.0.0.143:5060 --seed {seed} --hits 3",
        ]
        expected = "alice: 6 hits in the last second, from 3 nodes"
        nodes = [_Background(command, expected, env, ROOT) for command in commands]
        try:
            for node in nodes:
                if not node.ready.wait(START_TIMEOUT) or not node.started or node.process.poll() is not None:
                    self.fail(f"{node.command!r} never said {expected!r}:\n{''.join(node.output)}")
        finally:
            for node in nodes:
                node.stop()
        self.assertEqual([node.process.returncode for node in nodes], [0, 0, 0])
        for node in nodes:
            self.assertNotIn("Traceback", "".join(node.output))


class DeploymentKitTests(SynchronousTestCase):
    """
    C{doc/examples/dmq.toml} and C{doc/examples/dmq.service} are what dmq
    reads and what the documentation says they are.
    """

    def setUp(self) -> None:
        self.examples = os.path.join(ROOT, "doc", "examples")
        if not os.path.isdir(self.examples):
            raise SkipTest("not run from a checkout")

    def test_configLoads(self) -> None:
        """
        C{dmq.toml} is read by the real loader, every setting valid.
        """
        from dmq.config import parseSettings

        config = parseSettings(readConfigFile(os.path.join(self.examples, "dmq.toml")))
        self.assertEqual(config.serverAddress.toString(), "sip:127.0.0.1:5060")
        self.assertTrue(config.htableInitSync)
        self.assertEqual(config.control, "tcp:5080:interface=127.0.0.1")

    def test_configComplete(self) -> None:
        """
        Every setting is in C{dmq.toml}, given or commented out, under its
        Kamailio name; a commented one shows its default, which parses.
        """
        from dmq.config import PARAMETERS

        with open(os.path.join(self.examples, "dmq.toml"), encoding="utf-8") as f:
            text = f.read()
        missing = [
            parameter.name for parameter in PARAMETERS
            if not re.search(rf"^(# )?{parameter.name} = ", text, re.MULTILINE)
        ]
        self.assertEqual(missing, [])
        commented = "\n".join(
            line[2:].split("  #")[0] for line in text.splitlines() if re.match(r"# [a-z0-9_]+ = ", line)
        )
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(commented.replace("mypackage.peers.Greeter", "dmq.test.test_tap.Greeter") + "\n")
        given = readConfigFile(path)
        self.assertGreater(len(given), 20)

    def test_serviceUnit(self) -> None:
        """
        C{dmq.service} runs C{twistd -n --pidfile=} with the config file, as
        a user that is not root, restarted on failure; its command line is
        one C{twistd dmq} accepts.
        """
        import configparser
        import shlex

        from dmq.tap import Options

        unit = configparser.ConfigParser(strict=False, interpolation=None)
        unit.optionxform = str  # type: ignore[assignment,method-assign]
        unit.read(os.path.join(self.examples, "dmq.service"))
        service = unit["Service"]
        self.assertEqual(service["Restart"], "on-failure")
        self.assertNotIn(service.get("User", "root"), ("root", "0"))
        argv = shlex.split(service["ExecStart"])
        self.assertTrue(argv[0].endswith("/twistd"))
        self.assertEqual(argv[1:3], ["-n", "--pidfile="])
        dmqArguments = argv[argv.index("dmq") + 1:]
        self.assertEqual(dmqArguments, ["--config", "/etc/dmq/dmq.toml"])
        options = Options()
        options.parseOptions(["--config", os.path.join(self.examples, "dmq.toml")])
        self.assertEqual(unit["Install"]["WantedBy"], "multi-user.target")
