"""Docker-format seccomp profiles to OCI, and ``--security-opt`` parsing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dockyard.engine.ocispec import DEFAULT_CAPS
from dockyard.engine.seccomp import (
    SecurityOptions,
    container_seccomp,
    default_profile,
    kernel_version,
    load_profile,
    native_arch,
    parse_security_opts,
    to_oci,
)
from dockyard.errors import InvalidParameter

NEW_KERNEL = (6, 1)


def rules_for(oci: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [r for r in oci["syscalls"] if name in r["names"]]


def unconditionally_allowed(oci: dict[str, Any], name: str) -> bool:
    return any(r["action"] == "SCMP_ACT_ALLOW" and not r.get("args") for r in rules_for(oci, name))


def default_oci(caps: tuple[str, ...] | list[str] = DEFAULT_CAPS, arch: str = "amd64",
                kernel: tuple[int, int] = NEW_KERNEL) -> dict[str, Any]:  # fmt: skip
    oci = to_oci(default_profile(), caps, arch=arch, kernel=kernel)
    assert oci is not None
    return oci


def test_default_profile_top_level_for_amd64() -> None:
    oci = default_oci()
    assert oci["defaultAction"] == "SCMP_ACT_ERRNO"
    assert oci["defaultErrnoRet"] == 1
    assert oci["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert set(oci) == {"defaultAction", "defaultErrnoRet", "architectures", "syscalls"}
    for rule in oci["syscalls"]:
        assert set(rule) <= {"names", "action", "errnoRet", "args"}, "Docker-only keys must not leak"


def test_default_caps_block_namespace_and_mount_calls() -> None:
    oci = default_oci()
    for name in ("mount", "umount2", "unshare", "setns", "bpf", "add_key", "keyctl", "reboot", "init_module",
                 "open_by_handle_at", "kexec_load", "settimeofday", "syslog"):  # fmt: skip
        assert not unconditionally_allowed(oci, name), name
    assert not rules_for(oci, "keyctl") and not rules_for(oci, "mount")


def test_default_caps_allow_everyday_calls() -> None:
    oci = default_oci()
    for name in ("read", "openat", "execve", "mmap", "futex", "epoll_pwait", "chroot", "arch_prctl", "ptrace",
                 "modify_ldt", "statx", "getrandom", "io_uring_setup"):  # fmt: skip
        assert unconditionally_allowed(oci, name), name
    assert not rules_for(oci, "riscv_flush_icache") and not rules_for(oci, "set_tls")


def test_clone_is_filtered_on_namespace_flags_and_clone3_gets_enosys() -> None:
    oci = default_oci()
    assert rules_for(oci, "clone") == [
        {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}]}
    ]  # fmt: skip
    assert rules_for(oci, "clone3") == [{"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]
    assert rules_for(oci, "socket") == [
        {
            "names": ["socket"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}],
        }
    ]
    assert len(rules_for(oci, "personality")) == 5


def test_sys_admin_unlocks_mount_and_plain_clone() -> None:
    oci = default_oci([*DEFAULT_CAPS, "CAP_SYS_ADMIN"])
    for name in ("mount", "unshare", "setns", "clone", "clone3", "sethostname"):
        assert unconditionally_allowed(oci, name), name
    assert not any(r.get("args") for r in rules_for(oci, "clone")), "the flag filter is for non-admins"
    assert not any(r["action"] == "SCMP_ACT_ERRNO" for r in rules_for(oci, "clone3"))


@pytest.mark.parametrize(
    ("cap", "names"),
    [("CAP_SYS_PTRACE", ["kcmp", "pidfd_getfd", "process_madvise"]), ("CAP_SYS_TIME", ["settimeofday"]),
     ("CAP_SYS_MODULE", ["init_module", "finit_module"]), ("CAP_SYS_BOOT", ["reboot"]),
     ("CAP_SYSLOG", ["syslog"]), ("CAP_BPF", ["bpf"]), ("CAP_PERFMON", ["perf_event_open"]),
     ("CAP_DAC_READ_SEARCH", ["open_by_handle_at"]), ("CAP_SYS_NICE", ["mbind"])],
)  # fmt: skip
def test_capability_gated_calls(cap: str, names: list[str]) -> None:
    without = default_oci()
    with_cap = default_oci([*DEFAULT_CAPS, cap])
    for name in names:
        assert not unconditionally_allowed(without, name), name
        assert unconditionally_allowed(with_cap, name), name


def test_dropping_sys_chroot_drops_chroot() -> None:
    caps = [c for c in DEFAULT_CAPS if c != "CAP_SYS_CHROOT"]
    assert not rules_for(default_oci(caps), "chroot")
    assert not rules_for(default_oci([]), "chroot")


def test_min_kernel_gates_ptrace() -> None:
    assert unconditionally_allowed(default_oci(kernel=(4, 8)), "ptrace")
    assert not rules_for(default_oci(kernel=(4, 4)), "ptrace")


def test_arm64_gets_its_arch_rules() -> None:
    oci = default_oci(arch="arm64")
    assert oci["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert unconditionally_allowed(oci, "set_tls")
    assert not rules_for(oci, "arch_prctl") and not rules_for(oci, "modify_ldt")


def test_s390x_filters_the_second_clone_argument() -> None:
    oci = default_oci(arch="s390x")
    assert oci["architectures"] == ["SCMP_ARCH_S390X", "SCMP_ARCH_S390"]
    assert [r["args"][0]["index"] for r in rules_for(oci, "clone")] == [1]


def test_unknown_arch_leaves_architectures_to_the_runtime() -> None:
    assert "architectures" not in default_oci(arch="sparc64")


def test_custom_profile_with_name_architectures_flags_and_value_two() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [
            {"name": "mkdir", "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["kill"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 1, "value": 1, "valueTwo": 9, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
        ],
    }  # fmt: skip
    oci = load_profile(json.dumps(profile), DEFAULT_CAPS)
    assert oci == {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [
            {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["kill"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 1, "value": 1, "valueTwo": 9, "op": "SCMP_CMP_MASKED_EQ"}]},
        ],
    }  # fmt: skip


def test_empty_profile_means_no_filter() -> None:
    assert load_profile("{}", DEFAULT_CAPS) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{nope", "decoding seccomp profile failed: "),
        ("[1]", "decoding seccomp profile failed: the profile is not a JSON object"),
        ('{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"], "archMap": [{}]}',
         "both 'architectures' and 'archMap' are specified in the seccomp profile"),
        ('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"name": "a", "names": ["b"]}]}',
         "use either 'name' or 'names'"),
        ('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": {"names": ["b"]}}',
         "decoding seccomp profile failed: syscalls must be an array"),
        ('{"syscalls": [{"names": ["b"], "includes": {"minKernel": 4}}]}', "invalid kernel version"),
        ('{"syscalls": [{"names": ["b"], "excludes": {"minKernel": "x.y"}}]}', "invalid kernel version"),
    ],
)  # fmt: skip
def test_bad_profiles(text: str, message: str) -> None:
    with pytest.raises(InvalidParameter, match="^" + message.replace("(", r"\(")):
        load_profile(text, DEFAULT_CAPS)


@pytest.mark.parametrize(
    ("opts", "expected"),
    [
        ([], SecurityOptions()),
        (["no-new-privileges"], SecurityOptions(no_new_privileges=True)),
        (["no-new-privileges=true"], SecurityOptions(no_new_privileges=True)),
        (["no-new-privileges:1"], SecurityOptions(no_new_privileges=True)),
        (["no-new-privileges", "no-new-privileges=false"], SecurityOptions()),
        (["seccomp=unconfined"], SecurityOptions(seccomp_profile="unconfined")),
        (['seccomp={"a":"b=c"}'], SecurityOptions(seccomp_profile='{"a":"b=c"}')),
        (["apparmor=unconfined", "label=disable", "disable"],
         SecurityOptions(apparmor_profile="unconfined", label=("disable", "disable"))),
    ],
)  # fmt: skip
def test_parse_security_opts(opts: list[str], expected: SecurityOptions) -> None:
    assert parse_security_opts(opts) == expected


@pytest.mark.parametrize(
    ("opt", "message"),
    [("x", 'invalid --security-opt 1: "x"'), ("x=y", 'invalid --security-opt 2: "x=y"'),
     ("no-new-privileges=maybe", 'invalid --security-opt 2: "no-new-privileges=maybe"'),
     ('foo="q"', 'invalid --security-opt 2: "foo=\\"q\\""')],
)  # fmt: skip
def test_parse_security_opts_rejects_with_moby_texts(opt: str, message: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        parse_security_opts([opt])
    assert info.value.message == message


def test_container_seccomp_choices() -> None:
    default = container_seccomp(SecurityOptions(), False, DEFAULT_CAPS)
    assert default is not None and default["defaultAction"] == "SCMP_ACT_ERRNO"
    assert container_seccomp(SecurityOptions(seccomp_profile="builtin"), False, DEFAULT_CAPS) == default
    assert container_seccomp(SecurityOptions(), True, DEFAULT_CAPS) is None
    assert container_seccomp(SecurityOptions(seccomp_profile="unconfined"), False, DEFAULT_CAPS) is None
    custom = container_seccomp(
        SecurityOptions(seccomp_profile='{"defaultAction": "SCMP_ACT_LOG"}'), False, DEFAULT_CAPS
    )
    assert custom == {"defaultAction": "SCMP_ACT_LOG", "syscalls": []}


def test_default_profile_is_a_fresh_copy() -> None:
    first = default_profile()
    first["syscalls"].clear()
    assert default_profile()["syscalls"]


def test_host_facts() -> None:
    assert native_arch() in ("amd64", "arm64", "x86", "arm", "ppc64le", "s390x", "riscv64", "mips64")
    major, minor = kernel_version()
    assert major >= 3 and minor >= 0
