"""Shared test plumbing: the harness fixtures are plugins under tests/harness."""

pytest_plugins = [
    "tests.harness.sts_fixtures",
    "tests.harness.kube_fixtures",
    "tests.harness.operator_fixtures",
]
