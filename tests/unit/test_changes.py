"""Tests for Dockerfile-instruction changes applied to image configs (compared with dockerd)."""

from __future__ import annotations

import pytest

from dockyard.engine.changes import apply_changes
from dockyard.errors import InvalidParameter


def test_matches_dockerd_import() -> None:
    changes = [
        "EXPOSE 80/tcp 53/udp 8080",
        'ENV A=1 B="2 3"',
        "ENV C 4 5",
        'LABEL a=b "c d"=e',
        "WORKDIR /w",
        "USER nobody",
        "VOLUME /v /x",
        "ENTRYPOINT /bin/sh -c",
        "CMD echo hi",
        "ONBUILD RUN x",
        "STOPSIGNAL SIGTERM",
    ]
    config = apply_changes({}, changes)
    assert config == {
        "ExposedPorts": {"80/tcp": {}, "53/udp": {}, "8080/tcp": {}},
        "Env": ["A=1", "B=2 3", "C=4 5"],
        "Labels": {"a": "b", "c d": "e"},
        "WorkingDir": "/w",
        "User": "nobody",
        "Volumes": {"/v": {}, "/x": {}},
        "Entrypoint": ["/bin/sh", "-c", "/bin/sh -c"],
        "Cmd": ["/bin/sh", "-c", "echo hi"],
        "OnBuild": ["RUN x"],
        "StopSignal": "SIGTERM",
    }


def test_json_forms_and_overrides() -> None:
    base = {"Cmd": ["sh"], "Env": ["A=0", "PATH=/bin"], "WorkingDir": "/a"}
    config = apply_changes(base, ['CMD ["a", "b"]', "ENV A=1", "WORKDIR b/../c", 'VOLUME ["/d"]'])
    assert config["Cmd"] == ["a", "b"]
    assert config["Env"] == ["PATH=/bin", "A=1"]
    assert config["WorkingDir"] == "/a/c"
    assert config["Volumes"] == {"/d": {}}
    assert base["Env"] == ["A=0", "PATH=/bin"]


def test_entrypoint_resets_inherited_cmd() -> None:
    assert apply_changes({"Cmd": ["sh"]}, ['ENTRYPOINT ["x"]'])["Cmd"] is None
    assert apply_changes({}, ['CMD ["y"]', 'ENTRYPOINT ["x"]'])["Cmd"] == ["y"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("FROM x", "from is not a valid change command"),
        ("RUN x", "run is not a valid change command"),
        ("BOGUS a", "bogus is not a valid change command"),
        ("EXPOSE", "EXPOSE requires at least one argument"),
        ("ENV A", "ENV must have two arguments"),
        ("STOPSIGNAL", "STOPSIGNAL requires exactly one argument"),
        ("EXPOSE abc", "Invalid containerPort: abc"),
        ("ONBUILD FROM x", "FROM isn't allowed as an ONBUILD trigger"),
    ],
)
def test_errors(line: str, message: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        apply_changes({}, [line])
    assert info.value.message == message
