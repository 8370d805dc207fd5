"""The policy control plane: where policies come from and how compiled snapshots go out.

Providers (`file_provider`, `http_provider`, assembled by `providers.ProviderSet`) hand
their policy lists to the `merger`; every distinct merged set is compiled and published
by `publication.SnapshotManager` into a `SnapshotSink`, and match statistics flow back
from a `StatsSource` to the policy servers (`interfaces` declares both ends). Processes
that run a control plane (the supervisor, the Lambda extension) assemble it with
`builder.build_control_plane` and only choose where snapshots go and where statistics
come from.
"""
