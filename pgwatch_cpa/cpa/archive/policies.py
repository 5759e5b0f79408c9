"""The four archiving policies: which table, how a due batch is applied, whether it is exported.

Their numbers (archive after, retention) are rows of ``archive_policies`` (migration 0005; the guide's values are
the defaults, an UPDATE changes one), and "due" is the ``archive_due`` view of the same migration: the archiver
and the monitoring query read the same definition.

=========== ===================================================== ========== ==========================
policy      due                                                   exported   applied as
=========== ===================================================== ========== ==========================
documents   created > 1 year ago, not in an active engagement     yes        archived_at + archive_url
tasks       completed > 90 days ago                               yes        soft delete (+ archived_at)
invoices    paid > 1 year ago                                     no         archived_at (read-only for cpa_app)
audit_logs  created > 90 days ago                                 yes        batch DELETE
=========== ===================================================== ========== ==========================
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql


@dataclass(frozen=True)
class Policy:
    name: str
    table: str
    exported: bool
    apply: sql.SQL  # parameters: (archive_url, ids) when exported, else (ids,); must touch every id

    def apply_params(self, archive_url: str | None, ids: list[str]) -> list[object]:
        return [archive_url, ids] if self.name == "documents" else [ids]


POLICIES: dict[str, Policy] = {p.name: p for p in (
    Policy("documents", "documents", True,
           sql.SQL("UPDATE documents SET archived_at = now(), archive_url = %s WHERE id = ANY(%s)")),
    Policy("tasks", "tasks", True,
           sql.SQL("UPDATE tasks SET archived_at = now(), deleted_at = now() WHERE id = ANY(%s)")),
    Policy("invoices", "invoices", False,
           sql.SQL("UPDATE invoices SET archived_at = now() WHERE id = ANY(%s)")),
    Policy("audit_logs", "audit_logs", True,
           sql.SQL("DELETE FROM audit_logs WHERE id = ANY(%s)")),
)}
POLICY_NAMES = tuple(POLICIES)


def select(names: list[str] | None) -> list[Policy]:
    """The policies named (all when None or empty), in the table's order; an unknown name is a ValueError."""
    if not names:
        return list(POLICIES.values())
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise ValueError(f"unknown archive policy {', '.join(unknown)}; known: {', '.join(POLICY_NAMES)}")
    return [POLICIES[n] for n in POLICY_NAMES if n in names]


def due_batch_query(policy: Policy) -> sql.Composed:
    """The next due rows of one organization, oldest first: (id, row as JSON text). Parameters: (org, limit).

    The policy is a literal, not a parameter, so even a generic plan prunes archive_due's other branches."""
    return sql.SQL("""
        SELECT t.id, to_jsonb(t)::text
          FROM {table} t
         WHERE t.id IN (SELECT d.id FROM archive_due d
                         WHERE d.policy = {policy} AND d.organization_id = %s
                         ORDER BY d.aged_from, d.id LIMIT %s)
         ORDER BY t.id""").format(table=sql.Identifier(policy.table), policy=sql.Literal(policy.name))


def lock_due_query(policy: Policy) -> sql.Composed:
    """Lock the rows of a batch that are still due, and read them as JSON text. Parameter: (ids,)."""
    return sql.SQL("""
        SELECT t.id, to_jsonb(t)::text
          FROM {table} t
         WHERE t.id = ANY(%s)
           AND t.id IN (SELECT d.id FROM archive_due d WHERE d.policy = {policy})
         ORDER BY t.id
           FOR UPDATE OF t""").format(table=sql.Identifier(policy.table), policy=sql.Literal(policy.name))


def count_due_query(policy: Policy) -> sql.Composed:
    """Due rows and organizations of a policy (dry run). Parameter: (org or NULL,)."""
    return sql.SQL("""
        SELECT count(*), count(DISTINCT d.organization_id)
          FROM archive_due d
         WHERE d.policy = {policy} AND (%s::text IS NULL OR d.organization_id = %s::text)""").format(
        policy=sql.Literal(policy.name))
