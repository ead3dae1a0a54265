"""The shape of src/ (README, Shape): rooms depend downwards only. Room
edges come from tools/rooms (every `crate::ROOM` a room's code names,
comments and test modules aside)."""

import importlib.util
import subprocess
import sys

from mc_helpers import REPO_ROOT

TOOL = REPO_ROOT / "tools" / "rooms"

# What each room may name. A room missing here may name nothing.
ALLOWED = {
    "reactor": {"authfile", "extstore", "items", "logger", "metrics", "persist", "proto",
                "repl", "settings", "slab", "stats", "sys", "tls"},
    # The Prometheus endpoint: the stats room's reports, rendered.
    "metrics": {"items", "settings", "stats"},
    # The link over TLS (`-o repl_tls`) takes its sessions from tls.
    "repl": {"items", "persist", "settings", "stats", "sys", "tls"},
    "persist": {"items", "settings", "slab", "stats", "sys"},
    "proto": {"items", "logger", "numbers", "settings", "slab", "stats", "tls"},
    "items": {"extstore", "logger", "numbers", "settings", "slab"},
    "extstore": {"settings", "sys"},
    "stats": {"extstore", "items", "numbers", "settings"},
    "options": {"numbers", "process", "repl", "settings"},
    "process": {"authfile", "numbers", "settings", "sys", "tls"},
    # TLS sessions and the server's context; counts new sessions in stats.
    "tls": {"settings", "stats", "sys"},
    "settings": {"authfile"},
}


def load_tool():
    loader = importlib.machinery.SourceFileLoader("rooms", str(TOOL))
    spec = importlib.util.spec_from_loader("rooms", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_no_circle_between_rooms():
    out = subprocess.run([sys.executable, str(TOOL), "deps"], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stdout.decode()
    assert b"no circle between rooms" in out.stdout


def test_every_room_names_only_the_rooms_below_it():
    rooms = load_tool()
    graph = rooms.edges(str(REPO_ROOT / "src"))
    for room, names in graph.items():
        extra = names - ALLOWED.get(room, set())
        assert not extra, f"{room} names {sorted(extra)}"
    # The cache knows nothing of who listens to its changes.
    assert not graph["items"] & {"persist", "repl", "reactor", "proto"}
    assert "items" not in graph.get("slab", set())


def test_the_tool_finds_a_circle():
    rooms = load_tool()
    assert rooms.circles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [
        ("a", "b"),
        ("b", "c"),
        ("c", "a"),
    ]
    assert rooms.circles({"a": {"b"}, "b": set()}) == []
