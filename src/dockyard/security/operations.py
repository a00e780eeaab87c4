"""The Docker Engine API v1.47 operations (``operationId`` from the spec) with their HTTP methods.

Policies name operations; a name that is not here (nor registered by the daemon's router) is a typo, and a
typo in a security policy must fail loudly at load. Kept as data in the package so that ``dockyard policy
check`` works without the spec file or a running daemon.
"""

from __future__ import annotations

_BY_METHOD = {
    "DELETE": (
        "ConfigDelete ContainerDelete ImageDelete NetworkDelete NodeDelete PluginDelete SecretDelete "
        "ServiceDelete VolumeDelete "
    ),
    "GET": (
        "ConfigInspect ConfigList ContainerArchive ContainerAttachWebsocket ContainerChanges "
        "ContainerExport ContainerInspect ContainerList ContainerLogs ContainerStats ContainerTop "
        "DistributionInspect ExecInspect GetPluginPrivileges ImageGet ImageGetAll ImageHistory "
        "ImageInspect ImageList ImageSearch NetworkInspect NetworkList NodeInspect NodeList PluginInspect "
        "PluginList SecretInspect SecretList ServiceInspect ServiceList ServiceLogs SwarmInspect "
        "SwarmUnlockkey SystemDataUsage SystemEvents SystemInfo SystemPing SystemVersion TaskInspect "
        "TaskList TaskLogs VolumeInspect VolumeList "
    ),
    "HEAD": ("ContainerArchiveInfo SystemPingHead "),
    "POST": (
        "BuildPrune ConfigCreate ConfigUpdate ContainerAttach ContainerCreate ContainerExec ContainerKill "
        "ContainerPause ContainerPrune ContainerRename ContainerResize ContainerRestart ContainerStart "
        "ContainerStop ContainerUnpause ContainerUpdate ContainerWait ExecResize ExecStart ImageBuild "
        "ImageCommit ImageCreate ImageLoad ImagePrune ImagePush ImageTag NetworkConnect NetworkCreate "
        "NetworkDisconnect NetworkPrune NodeUpdate PluginCreate PluginDisable PluginEnable PluginPull "
        "PluginPush PluginSet PluginUpgrade SecretCreate SecretUpdate ServiceCreate ServiceUpdate Session "
        "SwarmInit SwarmJoin SwarmLeave SwarmUnlock SwarmUpdate SystemAuth VolumeCreate VolumePrune "
    ),
    "PUT": ("PutContainerArchive VolumeUpdate "),
}

SPEC_OPERATIONS: dict[str, str] = {op: method for method, names in _BY_METHOD.items() for op in names.split()}
"""operationId → HTTP method, for every operation in the v1.47 spec."""
