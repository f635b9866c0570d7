"""The benchmark's workload: a fixed, seeded, versioned sample external system.

The external system has users, roles and forums and folders (the *setup* data, logged before any
timed phase and never changed afterwards), and three kinds of records that churn over a limited
key space during the timed phases:

* ``post``: a forum post (``forums.forumpost``), FK to its forum (parent) and its author;
* ``membership``: a user-role binding (``cms.userrole``), FK to a user and a role;
* ``article``: an article page (``cms.article``) under a folder page.

Every timed task is logged as ``SIMPLE_SNAPSHOT``, so each one translates one or two foreign keys.
The operation mix is ~15% create / 80% update / 5% delete: creates prefer keys that do not exist
(yet, or any more), updates and deletes prefer keys that do. Every update carries new random text,
so the final content depends on the last operation per key: applying tasks out of order changes
the result, which is how the correctness gate detects it.

The bursty profiles (``Profile.burst``) log another stream over the same setup: every entity's
tasks come in bursts (see :meth:`Workload.bursts`), the shape coalescing is for.

Changing anything that alters the generated stream must bump ``WORKLOAD_VERSION``.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache, lru_cache
from itertools import islice
from typing import Any

from syncbus.enums import TaskDataType, TaskType

WORKLOAD_VERSION = 1
CONNECTOR_NAME = "BenchConnector"
SITE = "main"
CULTURE = "en-US"
DEFAULT_SEED = 20_240_601

_NS = uuid.UUID("6c1b1f39-58a4-4d84-9d4b-1b8f2f6c0b17")
_EPOCH = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)

# External id ranges: the connector answers translations from the id alone (no I/O).
AUTHOR_BASE = 100_000
ROLE_BASE = 200_000
FORUM_BASE = 300_000
FOLDER_BASE = 400_000
POST_BASE = 1_000_000
ARTICLE_BASE = 2_000_000
MEMBERSHIP_BASE = 3_000_000

ROLES = 20
FORUMS = 20
FOLDERS = 10

# Share of the key space (and of the tasks) per churned kind.
KIND_SHARES = (("post", 0.5), ("article", 0.3), ("membership", 0.2))
CREATE_SHARE = 0.15
DELETE_SHARE = 0.05

# The bursty stream (``Profile.burst`` > 0): shares of its bursts.
BURST_USER_SHARE = 0.6  # a user's profile saved again and again; the rest: a forum post's
BURST_NEW_POST = 0.4  # of the post bursts: a new post, created then edited
BURST_DELETE = 0.25  # of the post bursts: the last task deletes the post

_WORD_TEXT = (
    "account admin agenda answer archive audit backlog billing board branch budget build "
    "cache campaign catalog change client cluster comment config contract customer dashboard "
    "data deadline delivery deploy design digest domain draft editor email estimate event "
    "export feature feedback filter forecast forum gateway invoice issue journal ledger "
    "license metric migration milestone module notice onboarding order partner payment "
    "pipeline policy portal pricing priority product profile project quota release report "
    "request review roadmap schedule security segment server service session settings "
    "shipment sprint status storage subscription summary support survey team template ticket "
    "timeline training update upgrade vendor version warehouse webinar workflow"
)
_FIRST_TEXT = "Anna Boris Clara David Eva Filip Greta Hugo Ida Jonas Karin Lukas Mia Nora Oskar"
_LAST_TEXT = "Novak Berg Dvorak Fischer Horak Jansen Kral Lindqvist Marek Nowak Olsen Svoboda"
_WORDS = tuple(_WORD_TEXT.split())
_FIRST = tuple(_FIRST_TEXT.split())
_LAST = tuple(_LAST_TEXT.split())


@dataclass(frozen=True)
class Profile:
    """A workload size. ``peer_tasks``, ``e2e_tasks`` and ``http_tasks`` are prefixes of the
    same stream (``http_tasks``: the tasks the HTTP logging paths send, each path all of them;
    fewer than ``tasks`` where one request per task would take too long).

    ``kind`` says what the profile measures: ``throughput`` (every path against its floors),
    ``drain`` (peak RSS of a drain in a fresh subprocess), ``latency`` (``tasks`` tasks POSTed
    one at a time to ``syncbus serve``, each timed until applied) or ``admin-scale`` (the
    admin pages over a queue of ``tasks`` tasks, each page requested ``runs`` times) or ``lanes``
    (``tasks`` updates over ``keys`` entities drained by 1, 2 and 4 worker processes under an
    ENTITY connector, and by one under a CONNECTOR connector; PostgreSQL only) or ``bursty``
    (the bursty stream, ``burst`` tasks per entity in quick succession, drained with
    coalescing off and on) or ``load`` (a first synchronisation: ``tasks`` creates of new
    objects and pages, drained with history off and on).

    ``burst`` > 0 makes :meth:`Workload.tasks` the bursty stream (:meth:`Workload.bursts`)."""

    name: str
    tasks: int
    keys: int
    e2e_tasks: int
    peer_tasks: int
    http_tasks: int = 0
    kind: str = "throughput"
    runs: int = 0
    seed: int = DEFAULT_SEED
    burst: int = 0


def _only(
    name: str, kind: str, tasks: int, keys: int = 100, runs: int = 0, burst: int = 0
) -> Profile:
    return Profile(name, tasks, keys, e2e_tasks=0, peer_tasks=0, kind=kind, runs=runs, burst=burst)


# The latency profiles' connector is loaded by `syncbus serve` from its class path, so it
# builds its workload itself: both profiles share this key space.
LATENCY_KEYS = 100

PROFILES: dict[str, Profile] = {
    "smoke": Profile("smoke", tasks=500, keys=100, e2e_tasks=200, peer_tasks=500, http_tasks=200),
    "quick": Profile(
        "quick", tasks=20_000, keys=1_000, e2e_tasks=4_000, peer_tasks=20_000, http_tasks=3_000
    ),
    "full": Profile(
        "full", tasks=200_000, keys=10_000, e2e_tasks=20_000, peer_tasks=20_000, http_tasks=20_000
    ),
    "drain-smoke": _only("drain-smoke", "drain", 2_000, keys=200),
    "drain-200k": _only("drain-200k", "drain", 200_000, keys=10_000),
    "drain-1m": _only("drain-1m", "drain", 1_000_000, keys=50_000),
    "latency": _only("latency", "latency", 200, keys=LATENCY_KEYS),
    "latency-smoke": _only("latency-smoke", "latency", 20, keys=LATENCY_KEYS),
    "admin-scale": _only("admin-scale", "admin-scale", 100_000, runs=9),
    "admin-scale-smoke": _only("admin-scale-smoke", "admin-scale", 2_500, runs=1),
    # PostgreSQL only: one ENTITY connector drained by 1, 2 and 4 worker processes (lanes.py);
    # ``keys`` is the number of entities (lanes) the updates go round.
    # ``runs``: rounds of the four drains (each figure is the median round).
    "lanes": _only("lanes", "lanes", 20_000, keys=1_000, runs=3),
    "lanes-smoke": _only("lanes-smoke", "lanes", 1_000, keys=100, runs=1),
    # The same pre-logged bursty queue drained with coalescing off, then on (bursty.py);
    # ``keys``: as for the mix (users: a tenth of it, posts: half of it).
    # ``runs``: rounds of the two drains (each figure is the median round).
    "bursty": _only("bursty", "bursty", 20_000, keys=1_000, runs=3, burst=10),
    "bursty-smoke": _only("bursty-smoke", "bursty", 1_000, keys=200, runs=1, burst=10),
    # A first synchronisation: ``tasks`` creates of new posts, articles and memberships over
    # ``keys`` keys (each created once), drained with history off and on (load.py).
    "load": _only("load", "load", 20_000, keys=20_000, runs=3),
    "load-smoke": _only("load-smoke", "load", 1_000, keys=1_000, runs=1),
}


@dataclass(frozen=True, slots=True)
class BenchTask:
    """One task of the workload: the external object and how it is logged."""

    seq: int
    kind: str
    key: int
    task_type: TaskType
    obj: dict[str, Any]
    data_type: TaskDataType = TaskDataType.SIMPLE_SNAPSHOT
    site_name: str | None = SITE


# -- names, derived from indexes (the connector and the reference model share them) ------------
def author_name(i: int) -> str:
    return f"author{i:05d}"


def role_name(i: int) -> str:
    return f"role-{i:02d}"


def forum_name(i: int) -> str:
    return f"forum-{i:02d}"


def folder_alias(i: int) -> str:
    return f"folder-{i:02d}"


@cache
def folder_guid(i: int) -> str:
    return str(uuid.uuid5(_NS, f"folder-{i}"))


@lru_cache(maxsize=200_000)
def post_guid(key: int) -> str:
    return str(uuid.uuid5(_NS, f"post-{key}"))


@lru_cache(maxsize=200_000)
def article_guid(key: int) -> str:
    return str(uuid.uuid5(_NS, f"article-{key}"))


def article_alias(key: int) -> str:
    return f"article-{key:06d}"


class Workload:
    """The setup records and the stream of timed tasks of one profile (deterministic)."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.authors = max(20, profile.keys // 10)
        self.key_space = {kind: max(1, int(profile.keys * share)) for kind, share in KIND_SHARES}
        if self.key_space["membership"] > self.authors * ROLES:
            raise ValueError("the membership key space exceeds the user-role pairs")

    # -- key -> external ids ----------------------------------------------------------------
    def post_forum(self, key: int) -> int:
        return key % FORUMS

    def article_folder(self, key: int) -> int:
        return key % FOLDERS

    def membership_pair(self, key: int) -> tuple[int, int]:
        """(author index, role index) of a membership key; distinct for distinct keys."""
        return key % self.authors, (key // self.authors) % ROLES

    # -- setup ------------------------------------------------------------------------------
    def setup_tasks(self) -> list[BenchTask]:
        """Users, roles, forums and folders that the timed tasks reference."""
        out: list[BenchTask] = []

        def add(kind: str, key: int, obj: dict[str, Any], typ: TaskType) -> None:
            out.append(BenchTask(-len(out) - 1, kind, key, typ, obj, TaskDataType.SIMPLE))

        for i in range(self.authors):
            add("user", i, self.author(i), TaskType.CREATE_OBJECT)
        for i in range(ROLES):
            obj = {"kind": "role", "id": ROLE_BASE + i, "name": role_name(i)}
            obj["display_name"] = f"Role {i:02d}"
            add("role", i, obj, TaskType.CREATE_OBJECT)
        for i in range(FORUMS):
            obj = {"kind": "forum", "id": FORUM_BASE + i, "name": forum_name(i)}
            obj["display_name"] = f"Forum {i:02d}"
            add("forum", i, obj, TaskType.CREATE_OBJECT)
        for i in range(FOLDERS):
            obj = {"kind": "folder", "id": FOLDER_BASE + i, "alias": folder_alias(i)}
            obj.update(node_guid=folder_guid(i), name=f"Folder {i:02d}")
            add("folder", i, obj, TaskType.CREATE_DOCUMENT)
        return out

    def author(self, i: int) -> dict[str, Any]:
        first, last = _FIRST[i % len(_FIRST)], _LAST[(i // len(_FIRST)) % len(_LAST)]
        return {
            "kind": "user",
            "id": AUTHOR_BASE + i,
            "username": author_name(i),
            "email": f"{author_name(i)}@example.com",
            "first_name": first,
            "last_name": last,
        }

    # -- the timed stream -------------------------------------------------------------------
    def tasks(self, limit: int | None = None) -> Iterator[BenchTask]:
        """The first ``limit`` (default: all) timed tasks, always the same for a profile."""
        count = self.profile.tasks if limit is None else min(limit, self.profile.tasks)
        if self.profile.burst > 0:
            yield from islice(self.bursts(), count)
            return
        if self.profile.kind == "load":
            yield from islice(self.initial_load(), count)
            return
        rng = random.Random(f"{WORKLOAD_VERSION}:{self.profile.seed}")
        kinds = [kind for kind, _ in KIND_SHARES]
        weights = [share for _, share in KIND_SHARES]
        pools = {kind: _KeyPool(n) for kind, n in self.key_space.items()}
        for seq in range(count):
            kind = rng.choices(kinds, weights)[0]
            pool = pools[kind]
            r = rng.random()
            if r < CREATE_SHARE:
                op, key = "create", pool.pick_dead(rng)
                pool.revive(key)
            elif r < CREATE_SHARE + DELETE_SHARE:
                op, key = "delete", pool.pick_alive(rng)
                pool.kill(key)
            else:
                op, key = "update", pool.pick_alive(rng)
                pool.revive(key)
            yield self._task(seq, kind, op, key, rng)

    def initial_load(self) -> Iterator[BenchTask]:
        """The first synchronisation of the external system: every post, article and
        membership of the key spaces created once (``CreateObject`` / ``CreateDocument``),
        the kinds interleaved at random in their shares (posts, articles, memberships), each
        kind in key order. Nothing of it exists before; the setup records it names do."""
        rng = random.Random(f"{WORKLOAD_VERSION}:load:{self.profile.seed}")
        kinds = [kind for kind, _ in KIND_SHARES]
        made = dict.fromkeys(kinds, 0)
        seq = 0
        while True:
            weights = [self.key_space[kind] - made[kind] for kind in kinds]
            if not any(weights):
                return
            kind = rng.choices(kinds, weights)[0]
            yield self._task(seq, kind, "create", made[kind], rng)
            made[kind] += 1
            seq += 1

    def bursts(self) -> Iterator[BenchTask]:
        """The bursty stream (endless; :meth:`tasks` takes its first ``tasks``): bursts of
        ``burst`` tasks, each of one entity, the way a CRM or a forum sends them.

        * a user's profile saved ``burst`` times (``UpdateObject``, the whole record each time,
          a new e-mail and name every save); two users are saved at once: two user bursts in a
          row are logged interleaved (a random merge, each in its own order);
        * a forum post edited ``burst`` times by its author, logged consecutively: a new post
          (``CreateObject`` with its forum and author, then edits) or an existing one (edits
          only); an edit carries the subject and text, not the forum or the author, which do
          not change; some bursts end with a ``DeleteObject`` (a moderator removes the post).

        Coalescing can merge all of that: users refer to nothing, so another user's save between
        two of one user's does not separate them; a post refers to users and to posts
        (``post_parent_id``), so a post task between two saves of a user, or between two edits
        of another post, would; which is why post bursts are not interleaved with anything.
        """
        rng = random.Random(f"{WORKLOAD_VERSION}:bursty:{self.profile.seed}")
        posts = _KeyPool(self.key_space["post"])
        size, seq = self.profile.burst, 0
        held: int | None = None  # a user burst waiting for a second one to interleave with
        while True:
            if rng.random() < BURST_USER_SHARE:
                user = rng.randrange(self.authors)
                if held is None:
                    held = user
                    continue
                if user == held:
                    user = (user + 1) % self.authors
                first, second = [held] * size, [user] * size
                held = None
                for who in _random_merge(first, second, rng):
                    yield BenchTask(
                        seq, "user", who, TaskType.UPDATE_OBJECT, self._save(who, rng, seq)
                    )
                    seq += 1
                continue
            if held is not None:  # a lone user burst goes first, on its own
                for _ in range(size):
                    yield BenchTask(
                        seq, "user", held, TaskType.UPDATE_OBJECT, self._save(held, rng, seq)
                    )
                    seq += 1
                held = None
            new = rng.random() < BURST_NEW_POST or not posts.alive
            key = posts.pick_dead(rng) if new else posts.pick_alive(rng)
            posts.revive(key)
            delete = rng.random() < BURST_DELETE
            for i in range(size):
                when = (_EPOCH + dt.timedelta(seconds=seq)).isoformat()
                if i == 0 and new:
                    typ, obj = TaskType.CREATE_OBJECT, self._post(key, rng, seq, when)
                elif i == size - 1 and delete:
                    typ, obj = TaskType.DELETE_OBJECT, self._edit(key, rng, seq, when)
                    posts.kill(key)
                else:
                    typ, obj = TaskType.UPDATE_OBJECT, self._edit(key, rng, seq, when)
                yield BenchTask(seq, "post", key, typ, obj)
                seq += 1

    def _save(self, i: int, rng: random.Random, seq: int) -> dict[str, Any]:
        """A user's whole record as saved again: new name and e-mail (the user name stays)."""
        obj = self.author(i)
        obj["first_name"], obj["last_name"] = rng.choice(_FIRST), rng.choice(_LAST)
        obj["email"] = f"{author_name(i)}.{seq}@example.com"
        return obj

    def _edit(self, key: int, rng: random.Random, seq: int, when: str) -> dict[str, Any]:
        """A post's edit: subject and text (its forum and author stay as created)."""
        return {
            "kind": "post",
            "id": POST_BASE + key,
            "guid": post_guid(key),
            "subject": f"{_words(rng, 5).capitalize()} (rev {seq})",
            "text": _words(rng, 28),
            "edited_at": when,
            "client": "bench-forum/1.0",
        }

    def _task(self, seq: int, kind: str, op: str, key: int, rng: random.Random) -> BenchTask:
        doc = kind == "article"
        task_type = {
            ("create", False): TaskType.CREATE_OBJECT,
            ("update", False): TaskType.UPDATE_OBJECT,
            ("delete", False): TaskType.DELETE_OBJECT,
            ("create", True): TaskType.CREATE_DOCUMENT,
            ("update", True): TaskType.UPDATE_DOCUMENT,
            ("delete", True): TaskType.DELETE_DOCUMENT,
        }[(op, doc)]
        when = (_EPOCH + dt.timedelta(seconds=seq)).isoformat()
        if kind == "post":
            obj = self._post(key, rng, seq, when)
        elif kind == "article":
            obj = self._article(key, rng, seq, when)
        else:
            obj = self._membership(key, rng, seq, when)
        return BenchTask(seq, kind, key, task_type, obj)

    def _post(self, key: int, rng: random.Random, seq: int, when: str) -> dict[str, Any]:
        return {
            "kind": "post",
            "id": POST_BASE + key,
            "guid": post_guid(key),
            "forum_id": FORUM_BASE + self.post_forum(key),
            "author_id": AUTHOR_BASE + rng.randrange(self.authors),
            "subject": f"{_words(rng, 5).capitalize()} (rev {seq})",
            "text": _words(rng, 28),
            "posted_at": when,
            "client": "bench-forum/1.0",
        }

    def _article(self, key: int, rng: random.Random, seq: int, when: str) -> dict[str, Any]:
        return {
            "kind": "article",
            "id": ARTICLE_BASE + key,
            "node_guid": article_guid(key),
            "folder_id": FOLDER_BASE + self.article_folder(key),
            "alias": article_alias(key),
            "title": f"{_words(rng, 4).title()} {seq}",
            "summary": _words(rng, 8),
            "text": _words(rng, 22),
            "modified_at": when,
        }

    def _membership(self, key: int, rng: random.Random, seq: int, when: str) -> dict[str, Any]:
        author, role = self.membership_pair(key)
        granter = rng.randrange(self.authors)
        return {
            "kind": "membership",
            "id": MEMBERSHIP_BASE + key,
            "user_id": AUTHOR_BASE + author,
            "role_id": ROLE_BASE + role,
            "user_email": f"{author_name(author)}@example.com",
            "role_display_name": f"Role {role:02d}",
            "granted_by": f"{author_name(granter)}@example.com",
            "granted_at": when,
            "note": _words(rng, 24),
            "rev": seq,
        }


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choices(_WORDS, k=n))


def _random_merge(a: list[int], b: list[int], rng: random.Random) -> Iterator[int]:
    """The items of both lists interleaved at random, each list in its own order."""
    i = j = 0
    while i < len(a) or j < len(b):
        if j >= len(b) or (i < len(a) and rng.randrange(len(a) - i + len(b) - j) < len(a) - i):
            yield a[i]
            i += 1
        else:
            yield b[j]
            j += 1


class _KeyPool:
    """Which keys of one kind exist in the external system, with O(1) random picks."""

    def __init__(self, size: int) -> None:
        self.alive: list[int] = []
        self.dead: list[int] = list(range(size))
        self.where: dict[int, tuple[bool, int]] = {k: (False, k) for k in range(size)}

    def pick_dead(self, rng: random.Random) -> int:
        source = self.dead or self.alive
        return source[rng.randrange(len(source))]

    def pick_alive(self, rng: random.Random) -> int:
        source = self.alive or self.dead
        return source[rng.randrange(len(source))]

    def revive(self, key: int) -> None:
        self._move(key, to_alive=True)

    def kill(self, key: int) -> None:
        self._move(key, to_alive=False)

    def _move(self, key: int, *, to_alive: bool) -> None:
        is_alive, index = self.where[key]
        if is_alive == to_alive:
            return
        src, dst = (self.dead, self.alive) if to_alive else (self.alive, self.dead)
        last = src.pop()
        if last != key:
            src[index] = last
            self.where[last] = (not to_alive, index)
        dst.append(key)
        self.where[key] = (to_alive, len(dst) - 1)
