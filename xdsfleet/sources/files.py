"""The file source: a fleet kept as YAML files on disk, loaded once or followed live.

Files are the simplest way to run a fleet: the built-in demo, tests, small fleets, a GitOps
checkout. Each file is parsed alone and keeps its last good version, so an edit that breaks one file
is rejected with precise problems while valid edits of every other file still apply
(docs/architecture.md, decision 5, "never make things worse").

It must not interpret documents (that is `manifests.py`) nor know what the state is used for: it
reads, watches, decides which version of each file counts, and hands on whole `FleetState`s.
Reading and settling run in a thread, off the event loop (seconds at E = 100,000); many
megabytes of new YAML are parsed in worker processes, one per core.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import importlib.metadata
import importlib.resources
import multiprocessing
import os
import sys
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog
from watchfiles import awatch

from xdsfleet.documents.certificates import certificate_problems
from xdsfleet.documents.manifests import (
    FileContents,
    FleetFiles,
    FleetSpec,
    LoadedFleet,
    Place,
    assemble,
    object_label,
    parse_file,
    reference_problems,
)
from xdsfleet.model.errors import InvalidInput, Problem
from xdsfleet.model.fleet import FleetState
from xdsfleet.sources import pickling
from xdsfleet.telemetry import metrics

log = structlog.get_logger(__name__)

_SUFFIXES = (".yaml", ".yml")
# A file is known by its place as well as its path: a directory that changes role (a member's
# becoming the routes directory) must have its files parsed again for the new role.
_Key = tuple[Place, Path]
# The stamp of a file that could not be read: never equal to a real one, so it is read again.
_UNREAD = (-1, -1)


def builtin_fleet_path() -> Path:
    """The demo fleet shipped in the package. The package is always installed as a directory
    (never zipped), so this is a real file that can be watched like any other."""
    return Path(str(importlib.resources.files("xdsfleet") / "builtin" / "fleet.yaml"))


class ParseCache:
    """Parsed files kept on disk, so that a restart parses only the files that changed.

    At E = 100,000 the YAML of a fleet takes ~20 s to parse and validate, and unpickling what it
    gave takes well under a second (BENCHMARKS.md, cold start). An entry is found by the file's
    place, path and anchor directory, and used only when the content hash it was made from is
    that of the text just read (the catalog's stat stamp says when to read a file again; the
    hash says whether a parse of it can be reused), and only by the same build of xdsfleet on
    the same Python. Anything unreadable there is a miss. The directory must be the server's
    own (0700): its entries are pickles, which run code when loaded.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _entry(self, place: Place, path: Path, base: str) -> Path:
        key = "\0".join((_BUILD, place.value, str(path), base))
        return self.directory / f"{hashlib.blake2b(key.encode(), digest_size=16).hexdigest()}.pkl"

    def get(self, place: Place, path: Path, base: str, text: str) -> FileContents | None:
        try:
            with self._entry(place, path, base).open("rb") as stored:
                digest, contents = pickling.load(stored)
        except Exception:  # a missing, partial or foreign entry: a miss
            return None
        if digest != _digest(text) or not isinstance(contents, FileContents):
            return None
        return contents

    def put(self, place: Place, path: Path, base: str, text: str, contents: FileContents) -> None:
        entry = self._entry(place, path, base)
        partial = entry.with_suffix(f".{os.getpid()}.tmp")
        try:
            with partial.open("wb") as stored:
                pickling.dump((_digest(text), contents), stored)
            partial.replace(entry)  # atomic: a reader sees the old entry or the new one
        except OSError as error:
            # The cache only saves time: serving goes on without it.
            log.warning("parse_cache_unwritable", path=str(entry), error=str(error))


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


# What decides an entry's contents besides the file's text: the model, the parsing, and how
# entries are pickled. Their source is part of the key, because the package version does not
# change between commits, and an entry of another model read field by field would be misread.
_PARSER_SOURCES = ("model", "documents", "sources/files.py", "sources/pickling.py")


_PACKAGE = Path(__file__).resolve().parent.parent


def _build(package: Path = _PACKAGE) -> str:
    try:
        version = importlib.metadata.version("xdsfleet")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    sources = hashlib.blake2b(digest_size=16)
    for name in _PARSER_SOURCES:
        where = package / name
        for module in sorted(where.glob("*.py")) if where.is_dir() else [where]:
            sources.update(module.relative_to(package).as_posix().encode() + b"\0")
            sources.update(module.read_bytes())
    return f"{version}/{sys.version}/{sources.hexdigest()}"


# Which parser made an entry: pickles of another model or parser are not reused.
_BUILD = _build()


@dataclass(frozen=True, slots=True)
class _Read:
    """The latest version of one file on disk: its contents when valid, else its problems."""

    stamp: tuple[int, int]  # (mtime_ns, size) when read: catches an edit the watcher missed
    contents: FileContents | None
    problems: tuple[Problem, ...] = ()


@dataclass(frozen=True, slots=True)
class _Outcome:
    loaded: LoadedFleet
    problems: tuple[Problem, ...]
    rejected: frozenset[str]  # files whose latest version is not in use
    files: int


def _nearest_existing(path: Path) -> Path:
    """The directory to watch for `path` to appear: itself, or its closest existing ancestor."""
    while not path.is_dir():
        path = path.parent
    return path


class _Catalog:
    """Every file of one fleet as last read, and the last good version of each. `refresh` reads
    what changed; `settle` decides which version of each file counts and builds the state."""

    def __init__(self, fleet_path: Path, cache: ParseCache | None = None) -> None:
        # Resolved first, so that a symlinked Fleet file finds its real siblings.
        self.fleet_path = fleet_path.resolve()
        self._cache = cache
        self._fleet_key: _Key = (Place.FLEET, self.fleet_path)
        self._latest: dict[_Key, _Read] = {}
        self._good: dict[_Key, FileContents] = {}
        self._directory_errors: dict[Path, str] = {}

    # --- Reading ---

    def _specs(self) -> Iterator[FleetSpec]:
        """The Fleet documents in play: the latest valid one and the last good one."""
        read = self._latest.get(self._fleet_key)
        for contents in (read.contents if read else None, self._good.get(self._fleet_key)):
            if contents is not None and contents.fleet is not None:
                yield contents.fleet

    def _directories(self, specs: Collection[FleetSpec]) -> set[_Key]:
        directories = set()
        for spec in specs:
            if spec.routes_dir is not None:
                directories.add((Place.ROUTES, Path(spec.routes_dir)))
            directories.update(
                (Place.MEMBER, Path(m.manifests)) for m in spec.members if m.manifests is not None
            )
        return directories

    def watch_paths(self) -> frozenset[Path]:
        """What to watch, non-recursively: the Fleet file's directory and every directory it
        names (or, until one exists, the closest ancestor it will appear in)."""
        directories = self._directories(list(self._specs()))
        return frozenset(
            {self.fleet_path.parent} | {_nearest_existing(path) for _, path in directories}
        )

    def refresh(self, changed: Collection[Path]) -> list[Path]:
        """Read again what changed on disk, was never read, or left a directory; returns the
        files read again or removed."""
        fleet: list[_Unparsed] = []
        touched = [self.fleet_path] if self._reread(self._fleet_key, changed, fleet) else []
        self._parse(fleet)  # now: it names the directories
        directories = self._directories(list(self._specs()))
        self._directory_errors.clear()
        unparsed: list[_Unparsed] = []
        for place, directory in sorted(directories):
            touched += self._refresh_directory(place, directory, changed, unparsed)
        self._parse(unparsed)
        for key in [k for k in self._latest if k != self._fleet_key]:
            if (key[0], key[1].parent) not in directories:
                # The Fleet no longer names its directory: the file is no part of the fleet.
                del self._latest[key]
        return touched

    def _refresh_directory(
        self, place: Place, directory: Path, changed: Collection[Path], unparsed: list[_Unparsed]
    ) -> list[Path]:
        try:
            files = sorted(
                entry
                for entry in directory.iterdir()
                # Hidden files are editors' temporaries and locks, never manifests.
                if entry.suffix in _SUFFIXES
                and not entry.name.startswith(".")
                and entry != self.fleet_path
                and entry.is_file()
            )
        except OSError as error:
            # Its files keep their last versions: a directory that vanished is a mistake to
            # report, not a reason to withdraw a member's endpoints.
            self._directory_errors[directory] = error.strerror or str(error)
            return []
        touched = [path for path in files if self._reread((place, path), changed, unparsed)]
        for key in [k for k in self._latest if k[0] is place and k[1].parent == directory]:
            if key[1] not in files:
                del self._latest[key]
                touched.append(key[1])
        return touched

    def _reread(self, key: _Key, changed: Collection[Path], unparsed: list[_Unparsed]) -> bool:
        """Read `key` again if it changed: its cached parse is used at once, a text to parse is
        added to `unparsed` (for `_parse`)."""
        place, path = key
        known = self._latest.get(key)
        try:
            stat = path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            if known is not None and known.stamp == stamp and path not in changed:
                return False
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as error:
            if place is Place.FLEET:
                self._latest[key] = _unreadable(path, error)
            else:
                # Gone since the directory was listed: removed, like a file no longer listed.
                self._latest.pop(key, None)
            return True
        except (OSError, UnicodeDecodeError) as error:
            self._latest[key] = _unreadable(path, error)
            return True
        base = str(self.fleet_path.parent)
        cached = self._cache.get(place, path, base, text) if self._cache else None
        if cached is not None:
            self._latest[key] = _Read(stamp, cached)
        else:
            unparsed.append(_Unparsed(key, stamp, text))
        return True

    def _parse(self, unparsed: list[_Unparsed]) -> None:
        """Parse the texts read (in worker processes when there is much to parse), keeping each
        valid parse in the cache."""
        base = str(self.fleet_path.parent)
        jobs = [(u.text, u.key[1], u.key[0], base, self._cache) for u in unparsed]
        workers = _workers(sum(len(u.text) for u in unparsed), len(unparsed))
        parsed = _parse_in_workers(jobs, workers) if workers > 1 else None
        if parsed is None:
            parsed = [_parse_one(*job) for job in jobs]
        for read, outcome in zip(unparsed, parsed, strict=True):
            if isinstance(outcome, FileContents):
                self._latest[read.key] = _Read(read.stamp, outcome)
            else:
                self._latest[read.key] = _Read(read.stamp, None, outcome)

    # --- Deciding ---

    def _fleet_files(
        self, chosen: Mapping[_Key, FileContents], pending: Collection[_Key]
    ) -> tuple[FleetFiles, set[_Key]]:
        """The fleet made of the `chosen` files, and the keys it uses. Files already in use come
        before pending ones, so that an object defined twice is blamed on the newcomer."""
        contents = chosen.get(self._fleet_key)
        if contents is None or contents.fleet is None:
            # Only before the first good load: afterwards the last good Fleet file stands.
            raise InvalidInput(list(self._latest[self._fleet_key].problems))
        spec = contents.fleet
        used: set[_Key] = set()

        def ordered(directory: _Key | None, *files: _Key) -> dict[str, FileContents]:
            keys = [k for k in chosen if k in files or (k[0], k[1].parent) == directory]
            keys.sort(key=lambda k: (k in pending, k[1]))
            used.update(keys)
            return {str(k[1]): chosen[k] for k in keys}

        routes = (Place.ROUTES, Path(spec.routes_dir)) if spec.routes_dir else None
        members = {
            m.name: ordered((Place.MEMBER, Path(m.manifests)))
            for m in spec.members
            if m.manifests is not None
        }
        files = FleetFiles(str(self.fleet_path), spec, ordered(routes, self._fleet_key), members)
        return files, used

    def _directory_problems(self, spec: FleetSpec) -> list[Problem]:
        fleet = object_label("Fleet", "", spec.name)
        named = [("spec.source.manifests", spec.routes_dir)] + [
            (f"spec.members[{i}].source.manifests", m.manifests) for i, m in enumerate(spec.members)
        ]
        return [
            Problem(str(self.fleet_path), fleet, field, f"{directory}: {error}")
            for field, directory in named
            if directory is not None
            and (error := self._directory_errors.get(Path(directory))) is not None
        ]

    def _candidates(self) -> tuple[dict[_Key, FileContents], set[_Key]]:
        """Each file's latest version when valid, else its last good one; and the files whose
        candidate differs from the version in use (edited, added or removed)."""
        chosen: dict[_Key, FileContents] = {}
        for key, read in self._latest.items():
            if read.contents is not None:
                chosen[key] = read.contents
            elif key in self._good:
                chosen[key] = self._good[key]
        pending = {
            k for k in chosen.keys() | self._good.keys() if chosen.get(k) != self._good.get(k)
        }
        return chosen, pending

    def fleet_spec(self) -> FleetSpec | None:
        """The Fleet document in use."""
        contents = self._good.get(self._fleet_key)
        return contents.fleet if contents is not None else None

    def settle(self) -> _Outcome:
        """Decide which version of each file counts: the latest when it is valid and fits with
        the others, else the last good one. Raises `InvalidInput` when there is no good Fleet
        file at all (a first load)."""
        chosen, pending = self._candidates()
        rejected: list[Problem] = []
        while True:
            files, used = self._fleet_files(chosen, pending)
            loaded, clashes = assemble(files)
            at_fault = {p.file for p in clashes}
            blamed = {k for k in pending if str(k[1]) in at_fault}
            if not blamed:
                break
            # A changed file that clashes with the files in use is rejected like an invalid
            # one; each round puts back at least one file, so this ends.
            blamed_files = {str(k[1]) for k in blamed}
            rejected += [p for p in clashes if p.file in blamed_files]
            for key in blamed:
                pending.discard(key)
                if key in self._good:
                    chosen[key] = self._good[key]
                else:
                    del chosen[key]
        self._good = {key: chosen[key] for key in used}
        return self._outcome(loaded, files.fleet, rejected, clashes)

    def _outcome(
        self,
        loaded: LoadedFleet,
        spec: FleetSpec,
        rejected: list[Problem],
        unresolved: list[Problem],
    ) -> _Outcome:
        """The problems in play: invalid files of the fleet, missing directories, clashes that
        rejected a file and those that could not be pinned on a changed file."""
        in_play = self._directories([spec]) | {self._fleet_key}
        invalid = {
            key: read.problems
            for key, read in self._latest.items()
            if read.problems and (key in in_play or (key[0], key[1].parent) in in_play)
        }
        problems = [p for found in invalid.values() for p in found]
        problems += self._directory_problems(spec) + rejected + unresolved
        rejected_files = {str(k[1]) for k in invalid} | {p.file for p in rejected}
        return _Outcome(
            loaded, tuple(dict.fromkeys(problems)), frozenset(rejected_files), len(self._good)
        )


@dataclass(frozen=True, slots=True)
class _Unparsed:
    """A file read whose text is still to be parsed."""

    key: _Key
    stamp: tuple[int, int]
    text: str


# Parsing costs ~0.8 s per MiB of YAML and a worker ~0.5 s to start (a fresh interpreter that
# imports the parser): below this much text, parsing in this process is sooner.
POOL_MIN_BYTES = 4 * 2**20


def _workers(size: int, files: int) -> int:
    """How many worker processes to parse `files` files of `size` characters in all."""
    if size < POOL_MIN_BYTES or files < 2:
        return 1
    return min(files, len(os.sched_getaffinity(0)))


def _parse_one(
    text: str, path: Path, place: Place, base: str, cache: ParseCache | None
) -> FileContents | tuple[Problem, ...]:
    """One file's contents, or its problems; a valid parse is kept in `cache` (by a worker
    process too: the pickling is then not the server's)."""
    try:
        contents = parse_file(text, str(path), place, base)
    except InvalidInput as invalid:
        return tuple(invalid.problems)
    if cache is not None:
        cache.put(place, path, base, text, contents)
    return contents


def _parse_sent(text: str, path: Path, place: Place, base: str, cache: ParseCache | None) -> bytes:
    """`_parse_one` in a worker, pickled the fast way (`pickling`)."""
    return pickling.dumps(_parse_one(text, path, place, base, cache))


def _parse_in_workers(
    jobs: list[tuple[str, Path, Place, str, ParseCache | None]], workers: int
) -> list[FileContents | tuple[Problem, ...]] | None:
    """`_parse_one` of each job in `workers` processes; None when they could not run (a script
    without a `__main__` guard cannot spawn them): the caller then parses them itself."""
    # Spawned, not forked: the server has threads (gRPC's, the Kubernetes clients').
    context = multiprocessing.get_context("spawn")
    try:
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            sent = pool.map(_parse_sent, *zip(*jobs, strict=True))
            return [pickling.loads(parsed) for parsed in sent]
    except (BrokenProcessPool, OSError) as error:
        log.warning("parse_workers_failed", workers=workers, error=repr(error))
        return None


def _unreadable(path: Path, error: Exception) -> _Read:
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return _Read(_UNREAD, None, (Problem(str(path), "", "", f"cannot read: {reason}"),))


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a fleet is read: it makes hundreds of thousands of
    objects that live on, and the collector's passes over them, while nothing it could free
    exists yet, cost more than all the rest (E = 100,000 from the parse cache: 2.0 s of CPU with
    it, 0.7 s without; BENCHMARKS.md). Process-wide: the loop's garbage waits until the end."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def load_fleet(path: Path, cache: ParseCache | None = None) -> LoadedFleet:
    """Load the fleet of the Fleet file at `path` and every file it names; raises
    `InvalidInput` listing every problem in every file."""
    catalog = _Catalog(path, cache)
    with collector_paused():
        catalog.refresh(())
        outcome = catalog.settle()
    if outcome.problems:
        raise InvalidInput(list(outcome.problems))
    return outcome.loaded


def validate_fleet(path: Path, now: datetime | None = None) -> list[Problem]:
    """Everything wrong with a fleet: parse problems, or when it parses, what its routes
    reference that does not exist and what is wrong with its TLS Secrets at `now` (default:
    the clock). Empty when valid; warnings (`Severity.WARNING`) do not make it invalid."""
    return checked_fleet(path, now)[0]


def checked_fleet(
    path: Path, now: datetime | None = None
) -> tuple[list[Problem], LoadedFleet | None]:
    """`validate_fleet`'s problems, and the fleet loaded when it parses: callers that show it
    too (`xdsfleet validate`) must not parse every file a second time."""
    try:
        loaded = load_fleet(path)
    except InvalidInput as invalid:
        return list(invalid.problems), None
    problems = reference_problems(loaded.state, loaded.origins)
    when = now if now is not None else datetime.now(UTC)
    return problems + certificate_problems(loaded.state, loaded.origins, when), loaded


class FileSource:
    """A fleet from files, followed live. `run` hands the first state to `on_state`, then a new
    one after each batch of changes that changes it (or the Fleet document: `fleet_spec`);
    `problems` lists the current rejections, `origins` the file of each object in use."""

    def __init__(self, path: Path, cache: ParseCache | None = None) -> None:
        self._catalog = _Catalog(path, cache)
        self._stop = asyncio.Event()
        self._state: FleetState | None = None
        self._reported: dict[str, tuple[Problem, ...]] = {}
        self.problems: tuple[Problem, ...] = ()
        self.fleet_spec: FleetSpec | None = None
        self.origins: Mapping[str, str] = {}

    def stop(self) -> None:
        """Make `run` return (within one watch step)."""
        self._stop.set()

    def _read(self, changed: Collection[Path]) -> tuple[list[Path], _Outcome]:
        """Read what changed and settle: in a thread, since at E = 100,000 it takes seconds (the
        loop must go on answering /healthz and streams). Only one runs at a time (`run` awaits
        each), and nothing else touches the catalog."""
        with collector_paused():
            touched = self._catalog.refresh(changed)
            return touched, self._catalog.settle()

    async def run(self, on_state: Callable[[FleetState], None]) -> None:
        """Load the fleet (raising `InvalidInput` when it has problems), then follow it until
        `stop`."""
        _, outcome = await asyncio.to_thread(self._read, ())
        if outcome.problems:
            raise InvalidInput(list(outcome.problems))
        self._state, self.origins = outcome.loaded.state, outcome.loaded.origins
        self.fleet_spec = self._catalog.fleet_spec()
        log.info(
            "source_loaded",
            fleet=str(self._catalog.fleet_path),
            members=len(self._state.members),
            files=outcome.files,
        )
        on_state(self._state)
        while not self._stop.is_set():
            await self._follow(on_state)

    async def _follow(self, on_state: Callable[[FleetState], None]) -> None:
        """Apply batches of changes until `stop`, or until the paths to watch change (a
        directory appeared or went, or the Fleet names others): the caller then watches anew.
        An edit made while the watcher restarts is found by the next refresh, by its stamp."""
        paths = self._catalog.watch_paths()
        batches = awatch(*paths, step=50, debounce=1000, stop_event=self._stop, recursive=False)
        try:
            async with contextlib.aclosing(batches):
                async for batch in batches:
                    await self._apply({Path(path) for _, path in batch}, on_state)
                    if self._catalog.watch_paths() != paths:
                        return
        except FileNotFoundError:
            # A watched directory vanished before the watcher started: watch its parent instead.
            return

    async def _apply(
        self, changed: Collection[Path], on_state: Callable[[FleetState], None]
    ) -> None:
        touched, outcome = await asyncio.to_thread(self._read, changed)
        self._report(outcome)
        self.origins = outcome.loaded.origins
        # The spec counts too: its `source.kubeconfig` (the fleet cluster) is not in the state.
        spec = self._catalog.fleet_spec()
        if outcome.loaded.state == self._state and spec == self.fleet_spec:
            return
        self._state, self.fleet_spec = outcome.loaded.state, spec
        log.info(
            "source_changed",
            fleet=str(self._catalog.fleet_path),
            files=[str(path) for path in touched],
            members=len(self._state.members),
        )
        on_state(self._state)

    def _report(self, outcome: _Outcome) -> None:
        """Log each file's problems when they change, and each file that recovered."""
        by_file: dict[str, tuple[Problem, ...]] = {}
        for problem in outcome.problems:
            by_file[problem.file] = (*by_file.get(problem.file, ()), problem)
        for file, problems in by_file.items():
            if self._reported.get(file) != problems:
                # Rejected: its latest version is not in use. Inconsistent: it is in use, but
                # what it refers to is missing (a Service removed from under its EndpointSlice,
                # a member directory gone).
                event = "source_rejected" if file in outcome.rejected else "source_inconsistent"
                log.warning(event, file=file, problems=[str(p) for p in problems])
                metrics.SOURCE_REJECTIONS.labels("files").inc()
        for file in self._reported.keys() - by_file.keys():
            log.info("source_recovered", file=file)
        self._reported = by_file
        self.problems = outcome.problems
        metrics.SOURCE_PROBLEMS.labels("files").set(len(outcome.problems))
