"""Deterministic synthetic data for the CPA schema, loaded with COPY.

    counts = await seed(dsn, scale="medium", seed=42)      # {'organizations': 200, 'clients': 40000, ...}

Same ``seed`` and ``anchor`` (the "today" the data is relative to; default: today) give the same rows.
Shape: organizations of Zipf-like sizes (a few big practices, a long tail of small ones); clients with NULL contact
fields and NULL financial data sometimes; documents across seven tax years, ten categories, earlier versions,
OCR queue and review queue; tasks in every status and priority, some unassigned or without due date; invoices
draft, sent, partial, overdue, paid and cancelled, some with due dates far in the past; soft-deleted rows in
every tenant table.

The schema is migrated first (idempotent); the tables must be empty. All rows load in one transaction, then
``VACUUM (ANALYZE)`` runs so the planner has statistics and index-only scans have a visibility map.
A progress bar is drawn on stderr when it is a terminal (``progress=None``), never otherwise.

Measured sizes (PostgreSQL 18.6 sandbox, 2 cores, fsync off; tables + indexes + TOAST; seed 42):

=======  ===========  ==============  ==============  ===========================
scale    rows         on disk         seed time       note
=======  ===========  ==============  ==============  ===========================
small         29,646  20 MB           1.6 s           measured
medium     1,181,618  615 MB          40-53 s         measured (~22k rows/s)
large     ~11.8 M     ~6 GB (est.)    ~9-10 min (est.) extrapolated x10, not measured
=======  ===========  ==============  ==============  ===========================

Rows: organizations 20/200/1,000; clients 1k/40k/400k; documents ~11.6 per client, tasks ~8.3, engagements ~2.3,
invoices ~2.9, audit_logs ~2.5 per client. Measured by bench/bench_cpa_queries.py and a direct seed run.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import psycopg

from pgwatch_cpa.cpa.schema.migrate import migrate

SCALES: dict[str, tuple[int, int]] = {  # scale -> (organizations, clients)
    "small": (20, 1_000),
    "medium": (200, 40_000),
    "large": (1_000, 400_000),
}
TABLE_ORDER = ("organizations", "users", "clients", "engagements", "documents", "tasks", "invoices",
               "audit_logs", "auth_attempts", "quickbooks_syncs", "quickbooks_webhook_events")
CHUNK_ROWS = 20_000

_WORDS_A = ("Acme", "Summit", "Harbor", "Pioneer", "Cedar", "Granite", "Blue Ridge", "Evergreen", "Lakeside",
            "Northwind", "Redwood", "Silverline", "Keystone", "Maple", "Orchard", "Prairie", "Riverbend", "Sterling",
            "Tidewater", "Willow", "Beacon", "Copper", "Falcon", "Juniper")
_WORDS_B = ("Holdings", "Bakery", "Dental", "Logistics", "Consulting", "Construction", "Farms", "Auto Repair",
            "Realty", "Studio", "Analytics", "Landscaping", "Medical Group", "Plumbing", "Outfitters", "Labs")
_SUFFIX = ("LLC", "Inc.", "Co.", "LLP", "Corp.", "")
_FIRST = ("James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David", "Elizabeth",
          "Wei", "Priya", "Carlos", "Fatima", "Olga", "Kenji", "Amara", "Lucas", "Sofia", "Noah")
_LAST = ("Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Nguyen", "Patel",
         "Kowalski", "Okafor", "Tanaka", "Silva", "Muller", "Rossi", "Cohen", "Larsen")
_BUSINESS_TYPES = ("llc", "s_corp", "c_corp", "sole_prop", "partnership", "nonprofit", "individual")
_INDUSTRIES = ("retail", "healthcare", "construction", "technology", "hospitality", "real_estate", "agriculture",
               "manufacturing", "professional_services", "transportation")
_CATEGORIES = ("tax_return", "w2", "1099", "bank_statement", "receipt", "invoice", "payroll",
               "financial_statement", "correspondence", "engagement_letter")
_TAGS = ("urgent", "signed", "irs", "state", "k1", "amended", "scanned", "client_upload")
_ENG_TYPES = ("tax_return", "bookkeeping", "audit", "advisory", "payroll")
_ACTIONS = ("create", "update", "view", "download", "delete", "share")
_QB_ENTITIES = ("customer", "invoice", "payment", "account", "vendor")


def _weighted(rng: random.Random, pairs: tuple[tuple[str, int], ...]) -> Callable[[], str]:
    values = [p[0] for p in pairs]
    cum: list[int] = []
    total = 0
    for _, w in pairs:
        total += w
        cum.append(total)

    def pick() -> str:
        return rng.choices(values, cum_weights=cum)[0]
    return pick


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _ts(value: datetime) -> str:
    return value.isoformat()


def _esc(text: str) -> str:
    """COPY text-format escaping."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _row(*values: object) -> str:
    out = []
    for v in values:
        if v is None:
            out.append("\\N")
        elif isinstance(v, bool):
            out.append("t" if v else "f")
        else:
            out.append(str(v))
    return "\t".join(out) + "\n"


class _Progress:
    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled = enabled
        self.total = max(total, 1)
        self.done = 0
        self.started = time.monotonic()

    def advance(self, table: str, rows: int) -> None:
        self.done += rows
        if not self.enabled:
            return
        frac = min(self.done / self.total, 1.0)
        bar = "#" * int(frac * 30)
        rate = self.done / max(time.monotonic() - self.started, 1e-6)
        sys.stderr.write(f"\rseed [{bar:<30}] {frac:4.0%} {self.done:>10,} rows {rate:>9,.0f}/s  {table:<26}")
        sys.stderr.flush()

    def finish(self, message: str) -> None:
        if self.enabled:
            sys.stderr.write(f"\r{message:<100}\n")
            sys.stderr.flush()


@dataclass
class _Org:
    id: str
    n_clients: int
    users: list[str] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)


class _Generator:
    """Produces COPY text rows table by table; parent ids are remembered for the children."""

    def __init__(self, scale: str, seed: int, anchor: date) -> None:
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {sorted(SCALES)}, not {scale!r}")
        self.rng = random.Random(seed)
        self.anchor = anchor
        self.now = datetime(anchor.year, anchor.month, anchor.day, 12, tzinfo=UTC)
        n_orgs, n_clients = SCALES[scale]
        weights = [1.0 / (i + 1) ** 1.1 for i in range(n_orgs)]  # Zipf-like practice sizes
        total_w = sum(weights)
        spare = n_clients - n_orgs  # every organization has at least one client
        self.orgs = [_Org(f"org_{i + 1}", 1 + int(spare * w / total_w)) for i, w in enumerate(weights)]
        self.orgs[0].n_clients += n_clients - sum(o.n_clients for o in self.orgs)
        self.clients: list[tuple[str, _Org]] = []
        self.engagements: dict[str, list[str]] = {}  # client id -> engagement ids
        self.eng_org: list[tuple[str, _Org, str]] = []  # (engagement id, org, type)
        r = self.rng
        self.client_status = _weighted(r, (("active", 70), ("inactive", 10), ("prospect", 10), ("archived", 10)))
        self.ocr = _weighted(r, (("completed", 85), ("pending", 5), ("processing", 2), ("failed", 3),
                                 ("skipped", 5)))
        self.task_status = _weighted(r, (("todo", 30), ("in_progress", 20), ("blocked", 5), ("review", 10),
                                         ("completed", 30), ("cancelled", 5)))
        self.priority = _weighted(r, (("urgent", 5), ("high", 20), ("normal", 55), ("low", 20)))
        self.eng_status = _weighted(r, (("planned", 15), ("in_progress", 35), ("review", 10), ("completed", 35),
                                        ("cancelled", 5)))

    def _when(self, days_back: int) -> datetime:
        return self.now - timedelta(seconds=self.rng.randrange(max(days_back, 1) * 86_400))

    def _deleted(self, pct: float) -> str | None:
        return _ts(self._when(30)) if self.rng.random() < pct else None

    # ---------------------------------------------------------------- tables

    def organizations(self) -> Iterator[str]:
        tiers = ("starter", "professional", "enterprise")
        for i, org in enumerate(self.orgs):
            tier = tiers[2] if i < len(self.orgs) // 20 + 1 else tiers[1] if i < len(self.orgs) // 3 else tiers[0]
            created = self._when(2000)
            yield _row(org.id, f"{self.rng.choice(_LAST)} & {self.rng.choice(_LAST)} CPAs {i + 1}",
                       f"practice{i + 1}", tier, _ts(created), _ts(created), None)

    def users(self) -> Iterator[str]:
        roles = _weighted(self.rng, (("admin", 10), ("manager", 20), ("staff", 65), ("client", 5)))
        n = 0
        for org in self.orgs:
            for k in range(max(2, org.n_clients // 20)):
                n += 1
                uid = f"user_{n}"
                first, last = self.rng.choice(_FIRST), self.rng.choice(_LAST)
                email = f"{first.lower()}.{last.lower()}{k}@{org.id.replace('_', '')}.example.com"
                org.users.append(uid)
                org.emails.append(email)
                active = self.rng.random() > 0.08
                last_login = _ts(self._when(90)) if self.rng.random() > 0.1 else None
                created = _ts(self._when(1500))
                yield _row(uid, org.id, email, f"{first} {last}", "owner" if k == 0 else roles(), active,
                           last_login, created, created, self._deleted(0.02))

    def clients_rows(self) -> Iterator[str]:
        r = self.rng
        n = 0
        for org in self.orgs:
            for _ in range(org.n_clients):
                n += 1
                cid = f"client_{n}"
                self.clients.append((cid, org))
                name = f"{r.choice(_WORDS_A)} {r.choice(_WORDS_B)} {n} {r.choice(_SUFFIX)}".strip()
                first, last = r.choice(_FIRST), r.choice(_LAST)
                contact = None if r.random() < 0.15 else f"{first} {last}"
                email = None if r.random() < 0.10 else f"{first.lower()}@client{n}.example.org"
                phone = None if r.random() < 0.20 else f"+1-555-{r.randrange(10_000):04d}"
                fin = None
                if r.random() < 0.7:
                    fin = _esc(json.dumps({"quickbooks_id": f"qb_{n}",
                                           "annual_revenue": round(r.uniform(5e4, 5e7), 2),
                                           "fiscal_year_end": r.choice(["12-31", "06-30", "09-30"])}))
                created = _ts(self._when(1800))
                yield _row(cid, org.id, name, r.choice(_BUSINESS_TYPES), r.choice(_INDUSTRIES),
                           self.client_status(), r.choice(("low", "low", "medium", "high")), contact, email, phone,
                           fin, created, created, self._deleted(0.03))

    def engagements_rows(self) -> Iterator[str]:
        r = self.rng
        n = 0
        for cid, org in self.clients:
            ids = []
            for _ in range(r.choice((0, 1, 1, 2, 2, 2, 3, 3, 4, 5))):
                n += 1
                eid = f"eng_{n}"
                ids.append(eid)
                etype = r.choice(_ENG_TYPES)
                self.eng_org.append((eid, org, etype))
                year = self.anchor.year - r.choice((0, 0, 1, 1, 1, 2, 3))
                quarter = r.randint(1, 4) if etype in ("bookkeeping", "payroll") else None
                start = date(year, 1, 1) + timedelta(days=r.randrange(300))
                created = datetime(start.year, start.month, start.day, 9, tzinfo=UTC)
                yield _row(eid, org.id, cid, f"{year} {etype.replace('_', ' ')}", etype, self.eng_status(), year,
                           quarter, start, start + timedelta(days=r.randrange(30, 200)),
                           _money(r.randrange(50_000, 2_500_000)), _ts(created), _ts(created),
                           self._deleted(0.02))
            self.engagements[cid] = ids

    def documents_rows(self) -> Iterator[str]:
        r = self.rng
        n = 0
        for cid, org in self.clients:
            engs: Sequence[str | None] = self.engagements.get(cid) or [None]
            slug = cid.replace("_", "-")
            for k in range(r.choice((0, 2, 4, 6, 8, 10, 12, 15, 18, 25))):
                category = r.choice(_CATEGORIES)
                year = self.anchor.year - min(int(r.expovariate(0.6)), 6)
                quarter = r.randint(1, 4)
                tags = "{" + ",".join(r.sample(_TAGS, r.choice((0, 0, 1, 1, 2, 3)))) + "}"
                base_created = datetime(year, 1, 1, tzinfo=UTC) + timedelta(seconds=r.randrange(360 * 86_400))
                if base_created > self.now:
                    base_created = self._when(30)
                file_name = f"{category}_{year}_{slug}_{k}.pdf"
                versions = 2 if r.random() < 0.15 else 1
                parent = None
                for v in range(1, versions + 1):
                    n += 1
                    did = f"doc_{n}"
                    created = min(base_created + timedelta(days=7 * (v - 1)), self.now)
                    latest = v == versions
                    extracted = _esc(json.dumps({"pages": r.randint(1, 40), "confidence": round(r.random(), 3)}))
                    yield _row(did, org.id, cid, r.choice(engs), r.choice(org.users), parent, file_name,
                               r.randrange(20_000, 9_000_000), "application/pdf", category, year, quarter, v,
                               latest, self.ocr() if latest else "completed", latest and r.random() < 0.04, tags,
                               extracted, _ts(created), _ts(created), self._deleted(0.03))
                    parent = did

    def tasks_rows(self) -> Iterator[str]:
        r = self.rng
        n = 0
        for eid, org, etype in self.eng_org:
            for _ in range(r.choice((0, 1, 2, 3, 4, 5, 6, 8))):
                n += 1
                status = self.status_for_task()
                due = None if r.random() < 0.1 else self.anchor + timedelta(days=r.randint(-60, 60))
                assignee = None if r.random() < 0.1 else r.choice(org.users)
                checklist = _esc(json.dumps([{"item": f"step {i + 1}", "done": r.random() < 0.5}
                                             for i in range(r.randint(0, 5))]))
                created = self._when(200)
                completed = _ts(created + timedelta(days=r.randint(1, 30))) if status == "completed" else None
                yield _row(f"task_{n}", org.id, eid, f"wf_{etype}", assignee, f"{etype} task {n}", status,
                           self.priority(), due, checklist, completed, _ts(created), _ts(created),
                           self._deleted(0.02))

    def status_for_task(self) -> str:
        return self.task_status()

    def invoices_rows(self) -> Iterator[str]:
        r = self.rng
        n = 0
        for cid, org in self.clients:
            engs: Sequence[str | None] = self.engagements.get(cid) or [None]
            for _ in range(r.choice((0, 1, 2, 3, 3, 4, 5, 6))):
                n += 1
                invoice_date = self.anchor - timedelta(days=r.randrange(730))
                due = invoice_date + timedelta(days=30)
                total = r.randrange(25_000, 1_500_000)
                x = r.random()
                if due < self.anchor:
                    status = ("paid" if x < 0.65 else "overdue" if x < 0.85 else "partial" if x < 0.95
                              else "cancelled")
                else:
                    status = "sent" if x < 0.6 else "paid" if x < 0.75 else "partial" if x < 0.85 else "draft"
                paid = total if status == "paid" else r.randrange(1, total) if status == "partial" else 0
                paid_at = _ts(datetime(due.year, due.month, due.day, tzinfo=UTC)) if status == "paid" else None
                created = datetime(invoice_date.year, invoice_date.month, invoice_date.day, 10, tzinfo=UTC)
                yield _row(f"inv_{n}", org.id, cid, r.choice(engs), f"INV-{n:07d}", status, invoice_date, due,
                           _money(total), _money(paid), paid_at, _ts(created), _ts(created), self._deleted(0.02))

    def audit_logs_rows(self) -> Iterator[str]:
        r = self.rng
        n = 0
        for cid, org in self.clients:
            for _ in range(r.choice((0, 1, 2, 3, 4, 5))):
                n += 1
                user = None if r.random() < 0.1 else r.choice(org.users)
                changes = _esc(json.dumps({"field": "status", "old": "active", "new": "inactive"}))
                yield _row(f"audit_{n}", org.id, user, "client", cid, r.choice(_ACTIONS), changes,
                           f"10.{r.randrange(256)}.{r.randrange(256)}.{r.randrange(1, 255)}", _ts(self._when(180)))

    def auth_attempts_rows(self) -> Iterator[str]:
        r = self.rng
        emails = [e for o in self.orgs for e in o.emails]
        for n in range(1, len(self.clients) // 2 + 1):
            success = r.random() < 0.85
            yield _row(f"auth_{n}", r.choice(emails), f"203.0.113.{r.randrange(1, 255)}", success,
                       None if success else r.choice(("bad_password", "locked", "mfa_failed")),
                       "Mozilla/5.0", _ts(self._when(60)))

    def quickbooks_syncs_rows(self) -> Iterator[str]:
        r = self.rng
        status = _weighted(r, (("completed", 85), ("failed", 8), ("running", 4), ("pending", 3)))
        for n in range(1, len(self.clients) // 10 + 1):
            org = self.clients[r.randrange(len(self.clients))][1]
            s = status()
            started = self._when(90)
            yield _row(f"qbs_{n}", org.id, r.choice(_QB_ENTITIES), s, r.randrange(0, 500),
                       "timeout talking to QuickBooks" if s == "failed" else None, _ts(started),
                       _ts(started + timedelta(seconds=r.randrange(5, 300))) if s in ("completed", "failed")
                       else None)

    def quickbooks_webhook_events_rows(self) -> Iterator[str]:
        r = self.rng
        for n in range(1, len(self.clients) // 4 + 1):
            cid, org = self.clients[r.randrange(len(self.clients))]
            x = r.random()
            status = "pending" if x < 0.2 else "failed" if x < 0.25 else "processed"
            created = self._when(30)
            yield _row(f"qbw_{n}", org.id, r.choice(("Create", "Update", "Delete")), "customer", cid,
                       _esc(json.dumps({"realmId": f"realm_{org.id}", "id": cid})), status,
                       r.randrange(0, 5) if status != "processed" else 1,
                       _ts(created + timedelta(minutes=r.randrange(1, 120))) if status == "pending" else None,
                       _ts(created + timedelta(seconds=30)) if status == "processed" else None, _ts(created))


_COLUMNS = {
    "organizations": "id, name, subdomain, subscription_tier, created_at, updated_at, deleted_at",
    "users": "id, organization_id, email, name, role, is_active, last_login_at, created_at, updated_at, deleted_at",
    "clients": "id, organization_id, business_name, business_type, industry, status, risk_level, "
               "primary_contact_name, primary_contact_email, primary_contact_phone, financial_data, created_at, "
               "updated_at, deleted_at",
    "engagements": "id, organization_id, client_id, name, type, status, year, quarter, start_date, due_date, fee, "
                   "created_at, updated_at, deleted_at",
    "documents": "id, organization_id, client_id, engagement_id, uploaded_by, parent_document_id, file_name, "
                 "file_size, mime_type, category, year, quarter, version, is_latest_version, ocr_status, "
                 "needs_review, tags, extracted_data, created_at, updated_at, deleted_at",
    "tasks": "id, organization_id, engagement_id, workflow_id, assigned_to_id, title, status, priority, due_date, "
             "checklist, completed_at, created_at, updated_at, deleted_at",
    "invoices": "id, organization_id, client_id, engagement_id, invoice_number, status, invoice_date, due_date, "
                "total_amount, paid_amount, paid_at, created_at, updated_at, deleted_at",
    "audit_logs": "id, organization_id, user_id, entity_type, entity_id, action, changes, ip_address, created_at",
    "auth_attempts": "id, email, ip_address, success, failure_reason, user_agent, created_at",
    "quickbooks_syncs": "id, organization_id, entity_type, status, records_synced, error, started_at, completed_at",
    "quickbooks_webhook_events": "id, organization_id, event_type, entity_type, entity_id, payload, status, "
                                 "attempts, next_retry_at, processed_at, created_at",
}


def estimated_rows(scale: str) -> int:
    """Rough total row count of a scale (for the progress bar): ~25.5 rows per client."""
    return int(SCALES[scale][1] * 25.5)


async def seed(dsn: str, scale: str = "small", seed: int = 42, progress: bool | None = None,
               *, anchor: date | None = None) -> dict[str, int]:
    """Migrate, then fill the empty CPA tables of ``dsn``; return the number of rows per table.

    ``dsn`` must be the schema owner (RLS would hide rows from cpa_app). ``anchor`` is the date the data is
    relative to (overdue invoices, due tasks); pass it to reproduce a data set exactly on another day.
    """
    gen = _Generator(scale, seed, anchor or date.today())
    show = sys.stderr.isatty() if progress is None else progress
    await migrate(dsn)
    bar = _Progress(show, estimated_rows(scale))
    counts: dict[str, int] = {}
    producers: dict[str, Callable[[], Iterator[str]]] = {
        "organizations": gen.organizations, "users": gen.users, "clients": gen.clients_rows,
        "engagements": gen.engagements_rows, "documents": gen.documents_rows, "tasks": gen.tasks_rows,
        "invoices": gen.invoices_rows, "audit_logs": gen.audit_logs_rows, "auth_attempts": gen.auth_attempts_rows,
        "quickbooks_syncs": gen.quickbooks_syncs_rows,
        "quickbooks_webhook_events": gen.quickbooks_webhook_events_rows,
    }
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True, application_name="cpa_seed") as conn:
        cur = await conn.execute("SELECT EXISTS (SELECT 1 FROM organizations)")
        row = await cur.fetchone()
        if row and row[0]:
            raise ValueError("seed: the CPA tables are not empty; seed a fresh database")
        async with conn.transaction(), conn.cursor() as cur:
            for table in TABLE_ORDER:
                counts[table] = 0
                async with cur.copy(f"COPY {table} ({_COLUMNS[table]}) FROM STDIN") as copy:
                    chunk: list[str] = []
                    for line in producers[table]():
                        chunk.append(line)
                        if len(chunk) >= CHUNK_ROWS:
                            await copy.write("".join(chunk).encode())
                            counts[table] += len(chunk)
                            bar.advance(table, len(chunk))
                            chunk = []
                    if chunk:
                        await copy.write("".join(chunk).encode())
                        counts[table] += len(chunk)
                        bar.advance(table, len(chunk))
        for table in TABLE_ORDER:
            await conn.execute(f"VACUUM (ANALYZE) {table}")
    bar.finish(f"seeded {sum(counts.values()):,} rows ({scale}, seed {seed})")
    return counts

