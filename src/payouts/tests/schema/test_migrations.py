"""Migrations applied to a database that already holds rows, on whatever database this run uses."""

from datetime import timedelta

from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import TransactionTestCase
from django.utils import timezone

BEFORE_LEASE_RULE = [("payouts", "0001_initial")]
LEASE_RULE = [("payouts", "0002_payout_unfinished_has_lease")]


class UnfinishedHasLeaseMigrationTests(TransactionTestCase):
    def tearDown(self) -> None:
        # Leave the schema as every other test expects it, whatever happened above.
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())

    def test_unfinished_payouts_without_a_lease_get_an_expired_one_and_the_rule_holds(
        self,
    ) -> None:
        executor = MigrationExecutor(connection)
        executor.migrate(BEFORE_LEASE_RULE)
        old = executor.loader.project_state(BEFORE_LEASE_RULE).apps
        client = old.get_model("payouts", "ApiClient").objects.create(name="merchant")
        payouts = old.get_model("payouts", "PayoutRequest").objects
        future = timezone.now() + timedelta(hours=1)
        rows = {"NEW": None, "PROCESSING": None, "PAID": None, "CANCELED": None}
        for status, lease in rows.items():
            payouts.create(
                client=client,
                client_reference=status,
                amount=1,
                currency="EUR",
                destination="sandbox:success",
                status=status,
                lease_expires_at=lease,
            )
        payouts.create(
            client=client,
            client_reference="leased",
            amount=1,
            currency="EUR",
            destination="sandbox:success",
            lease_expires_at=future,
        )

        before = timezone.now()
        executor = MigrationExecutor(connection)  # a fresh graph: the history changed
        executor.migrate(LEASE_RULE)

        new = executor.loader.project_state(LEASE_RULE).apps
        leases = dict(
            new.get_model("payouts", "PayoutRequest").objects.values_list(
                "client_reference", "lease_expires_at"
            )
        )
        # The unfinished ones can be swept at once; finished ones need none; a lease stands.
        for status in ("NEW", "PROCESSING"):
            lease = leases[status]
            assert lease is not None, status
            self.assertLessEqual(before - timedelta(seconds=5), lease)
            self.assertLessEqual(lease, timezone.now())
        self.assertIsNone(leases["PAID"])
        self.assertIsNone(leases["CANCELED"])
        self.assertEqual(leases["leased"], future)
