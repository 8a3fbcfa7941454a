"""One price table for every target ``segany compare`` sets side by side, as data.

Every entry is a :class:`Price`: a number, its unit, the page it was read from and when. The
numbers the deploy commands already print come from where they live (``deploy/aws/instances.py``,
``deploy/gcp/prices.py``) and are only re-labelled here; the ones added here (S3 for async, the
serverless free tier, Cloud Run's instance-based free tier) carry their own source.

``load_prices("live")`` reads the AWS Price List API (boto3 ``pricing``, us-east-1) and the Cloud
Billing Catalog API (``cloudbilling.googleapis.com/v1/services/{id}/skus``) when credentials
allow; whatever it cannot read keeps the table's number, and ``PriceTable.notes`` says why.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

from deploy.aws import instances as _aws
from deploy.gcp import prices as _gcp


@dataclass(frozen=True)
class Price:
    key: str
    usd: float
    unit: str
    source: str
    read_on: str
    note: str = ""


@dataclass(frozen=True)
class PriceTable:
    mode: str  # "table" or "live"
    prices: tuple[Price, ...]
    notes: tuple[str, ...] = field(default=())

    def get(self, key: str) -> Price:
        for price in self.prices:
            if price.key == key:
                return price
        raise KeyError(f"no price {key!r} in the table; known: {', '.join(p.key for p in self.prices)}")

    def usd(self, key: str) -> float:
        return self.get(key).usd

    def has(self, key: str) -> bool:
        return any(p.key == key for p in self.prices)

    def with_overrides(self, overrides: dict[str, Price], note: str | None = None) -> PriceTable:
        """A copy with some prices replaced (or added), e.g. by the live APIs."""
        kept = [overrides.get(p.key, p) for p in self.prices]
        added = [p for k, p in overrides.items() if not self.has(k)]
        return PriceTable(self.mode, tuple(kept + added), self.notes + ((note,) if note else ()))


# --- the table --------------------------------------------------------------------------------
AWS_READ_ON = "2026-12"  # deploy/aws/instances.py: "read 2026-12 via third-party tables"
GCP_READ_ON = "2026-12"  # deploy/gcp/prices.py: "read 2026-12"
ADDED_ON = "2026-12-07"
SAGEMAKER_PRICING = "https://aws.amazon.com/sagemaker/pricing/"
S3_PRICING = "https://aws.amazon.com/s3/pricing/"
CLOUD_RUN_PRICING = "https://cloud.google.com/run/pricing"
PRICE_LIST_API = "https://api.pricing.us-east-1.amazonaws.com (AWS Price List API GetProducts, AmazonSageMaker)"
CLOUD_RUN_BILLING_SERVICE = "152E-C115-5142"  # Cloud Run's service id in the Cloud Billing catalogue
CATALOG_API = f"https://cloudbilling.googleapis.com/v1/services/{CLOUD_RUN_BILLING_SERVICE}/skus"

# Added here (not used by the deploy commands), us-east-1 / tier 1. Not re-read this session
# (no web access beyond the docs search): check the pages before relying on them.
S3_STANDARD = {"storage_gb_month": 0.023, "put_per_1000": 0.005, "get_per_1000": 0.0004}
SERVERLESS_FREE_SECONDS = 150_000  # per month, for the first 2 months (../shared/PLATFORMS.md)
INSTANCE_BASED_FREE = {"vcpu_seconds": 240_000, "gib_seconds": 450_000}


def _table_prices() -> list[Price]:
    aws_src = _aws.PRICE_SOURCE
    out = []
    for name, it in _aws.INSTANCE_TYPES.items():
        out.append(Price(f"sagemaker.hosting_hour.{name}", it.usd_per_hour, "USD per instance-hour", aws_src, AWS_READ_ON,
                         "real-time and asynchronous endpoints bill the same hosting instance-hour"))
        out.append(Price(f"sagemaker.batch_hour.{name}", it.usd_per_hour, "USD per instance-hour", aws_src, AWS_READ_ON,
                         "Batch Transform assumed at the hosting rate (the third-party tables list the same figure)"))
    out += [
        Price("sagemaker.serverless.gb_second", _aws.SERVERLESS_GB_SECOND_USD, "USD per GB-second of configured memory",
              aws_src, AWS_READ_ON, "x86, on-demand; billed per ms of inference, cold start not billed"),
        Price("sagemaker.data_gb", _aws.SERVERLESS_DATA_GB_USD, "USD per GB processed in and per GB out", aws_src,
              AWS_READ_ON, "charged on real-time, serverless and async invocations alike"),
        Price("sagemaker.serverless.free_seconds", SERVERLESS_FREE_SECONDS, "seconds of inference free per month",
              SAGEMAKER_PRICING, ADDED_ON, "AWS free tier: first 2 months only (off by default in the cost model)"),
        Price("s3.storage_gb_month", S3_STANDARD["storage_gb_month"], "USD per GB-month, S3 Standard", S3_PRICING, ADDED_ON,
              "async: inputs and outputs kept for the retention period; not re-read this session"),
        Price("s3.put_per_1000", S3_STANDARD["put_per_1000"], "USD per 1,000 PUT requests", S3_PRICING, ADDED_ON,
              "not re-read this session"),
        Price("s3.get_per_1000", S3_STANDARD["get_per_1000"], "USD per 1,000 GET requests", S3_PRICING, ADDED_ON,
              "not re-read this session"),
    ]
    src = _gcp.SOURCE
    for billing, rates in (("request", _gcp.REQUEST_BASED), ("instance", _gcp.INSTANCE_BASED)):
        out.append(Price(f"cloudrun.{billing}.vcpu_second", rates["vcpu_second"], "USD per vCPU-second", src, GCP_READ_ON))
        out.append(Price(f"cloudrun.{billing}.gib_second", rates["gib_second"], "USD per GiB-second", src, GCP_READ_ON))
    out += [
        Price("cloudrun.request.million_requests", _gcp.REQUEST_BASED["million_requests"], "USD per million requests",
              src, GCP_READ_ON, "request-based billing only"),
        Price("cloudrun.request.free_vcpu_seconds", _gcp.FREE_MONTHLY["vcpu_seconds"], "vCPU-seconds free per month",
              src, GCP_READ_ON),
        Price("cloudrun.request.free_gib_seconds", _gcp.FREE_MONTHLY["gib_seconds"], "GiB-seconds free per month",
              src, GCP_READ_ON),
        Price("cloudrun.request.free_requests", _gcp.FREE_MONTHLY["requests"], "requests free per month", src, GCP_READ_ON),
        Price("cloudrun.instance.free_vcpu_seconds", INSTANCE_BASED_FREE["vcpu_seconds"], "vCPU-seconds free per month",
              CLOUD_RUN_PRICING, ADDED_ON, "instance-based billing's own free tier; not re-read this session"),
        Price("cloudrun.instance.free_gib_seconds", INSTANCE_BASED_FREE["gib_seconds"], "GiB-seconds free per month",
              CLOUD_RUN_PRICING, ADDED_ON, "instance-based billing's own free tier; not re-read this session"),
    ]
    for (gpu, zonal), usd in _gcp.GPU_SECOND.items():
        out.append(Price(f"cloudrun.gpu_second.{gpu}.{'zonal' if zonal else 'nonzonal'}", usd, "USD per GPU-second",
                         src, GCP_READ_ON, "us-central1, third-party reading of the Cloud Billing catalogue; no free tier"))
    return out


def table_prices() -> PriceTable:
    return PriceTable("table", tuple(_table_prices()))


# --- live: AWS Price List API -----------------------------------------------------------------
def _first_on_demand(product: dict) -> tuple[float, str] | None:
    for term in (product.get("terms", {}).get("OnDemand") or {}).values():
        for dim in (term.get("priceDimensions") or {}).values():
            usd = dim.get("pricePerUnit", {}).get("USD")
            if usd is not None:
                return float(usd), dim.get("unit", "")
    return None


def parse_aws_products(price_list: Iterable[str | dict], region: str = "us-east-1") -> dict[str, float]:
    """GetProducts' ``PriceList`` (JSON strings, as the API returns them) -> {price key: USD}."""
    found: dict[str, float] = {}
    for item in price_list:
        product = json.loads(item) if isinstance(item, str) else item
        attrs = product.get("product", {}).get("attributes", {})
        if attrs.get("regionCode", region) != region:
            continue
        rate = _first_on_demand(product)
        if rate is None or rate[0] <= 0:
            continue
        usd, unit = rate
        usage = attrs.get("usagetype", "")
        kind = usage.split("-", 1)[-1].split(":", 1)[0]  # USE1-Host:ml.m5.xlarge -> Host
        name = attrs.get("instanceName") or attrs.get("instanceType") or usage.rsplit(":", 1)[-1]
        hourly = unit.lower() in ("hrs", "hour", "hours")
        if kind == "Host" and hourly and name.startswith("ml."):
            found[f"sagemaker.hosting_hour.{name}"] = usd
        elif kind in ("Tsform", "Transform") and hourly and name.startswith("ml."):
            found[f"sagemaker.batch_hour.{name}"] = usd
        elif "serverless" in usage.lower():
            if "gb" in unit.lower():  # already per GB-second
                found["sagemaker.serverless.gb_second"] = usd
            elif attrs.get("memorySize"):  # per second of one memory size, e.g. "4096 MB"
                mb = float(str(attrs["memorySize"]).split()[0])
                found["sagemaker.serverless.gb_second"] = usd / (mb / 1024)
    return found


def _aws_live(client: Any, region: str, instance_types: Iterable[str]) -> tuple[dict[str, float], list[str]]:
    found: dict[str, float] = {}
    problems: list[str] = []
    queries = [[{"Type": "TERM_MATCH", "Field": "instanceName", "Value": t}] for t in instance_types]
    queries.append([{"Type": "CONTAINS", "Field": "usagetype", "Value": "ServerlessInf"}])
    for filters in queries:
        try:
            token = None
            while True:
                kwargs = {"ServiceCode": "AmazonSageMaker", "FormatVersion": "aws_v1", "MaxResults": 100,
                          "Filters": [{"Type": "TERM_MATCH", "Field": "regionCode", "Value": region}, *filters]}
                if token:
                    kwargs["NextToken"] = token
                page = client.get_products(**kwargs)
                found.update(parse_aws_products(page.get("PriceList", []), region))
                token = page.get("NextToken")
                if not token:
                    break
        except Exception as exc:  # no credentials, no network, a filter the API refuses: keep the table
            problems.append(f"{filters[-1]['Value']}: {type(exc).__name__}: {exc}")
            if type(exc).__name__ != "ClientError":  # credentials or network: the next query fails alike
                break
    return found, problems


# --- live: Cloud Billing Catalog API ----------------------------------------------------------
def _money(unit_price: dict) -> float:
    return int(unit_price.get("units") or 0) + int(unit_price.get("nanos") or 0) / 1e9


def parse_gcp_skus(skus: Iterable[dict], region: str = "us-central1") -> dict[str, float]:
    """The ``skus`` of services.skus.list for Cloud Run -> {price key: USD} (and free tiers)."""
    found: dict[str, float] = {}
    for sku in skus:
        regions = sku.get("serviceRegions") or []
        if region not in regions and "global" not in regions:
            continue
        if sku.get("category", {}).get("usageType", "OnDemand") != "OnDemand":
            continue
        desc = sku.get("description", "").lower()
        info = (sku.get("pricingInfo") or [{}])[0].get("pricingExpression", {})
        tiers = info.get("tieredRates") or []
        paid = [t for t in tiers if _money(t.get("unitPrice", {})) > 0]
        if not paid:
            continue
        usd = _money(paid[0]["unitPrice"])
        free = float(paid[0].get("startUsageAmount") or 0)
        unit = info.get("usageUnit", "")
        instance = any(w in desc for w in ("instance-based", "always-on", "always allocated"))
        billing = "instance" if instance else "request"
        if "idle" in desc:
            continue
        if "gpu" in desc and "l4" in desc:
            zonal = not any(w in desc for w in ("without zonal", "no zonal", "non-zonal", "nonzonal"))
            found[f"cloudrun.gpu_second.nvidia-l4.{'zonal' if zonal else 'nonzonal'}"] = usd
        elif "cpu" in desc and unit == "s":
            found[f"cloudrun.{billing}.vcpu_second"] = usd
            if free:
                found[f"cloudrun.{billing}.free_vcpu_seconds"] = free
        elif "memory" in desc and unit == "GiBy.s":
            found[f"cloudrun.{billing}.gib_second"] = usd
            if free:
                found[f"cloudrun.{billing}.free_gib_seconds"] = free
        elif "request" in desc and unit == "count":
            found["cloudrun.request.million_requests"] = usd * 1e6
            if free:
                found["cloudrun.request.free_requests"] = free
    return found


def _gcp_live(session: Any, region: str) -> tuple[dict[str, float], list[str]]:
    skus: list[dict] = []
    try:
        params: dict[str, Any] = {"currencyCode": "USD", "pageSize": 5000}
        while True:
            response = session.get(CATALOG_API, params=params, timeout=30)
            response.raise_for_status()
            body = response.json()
            skus += body.get("skus", [])
            if not body.get("nextPageToken"):
                break
            params["pageToken"] = body["nextPageToken"]
    except Exception as exc:
        return {}, [f"{type(exc).__name__}: {exc}"]
    return parse_gcp_skus(skus, region), []


def _as_prices(found: dict[str, float], base: PriceTable, source: str, today: str) -> dict[str, Price]:
    out = {}
    for key, usd in found.items():
        unit = base.get(key).unit if base.has(key) else "USD"
        out[key] = Price(key, usd, unit, source, today, "read live")
    return out


def load_prices(mode: str = "table", *, aws_region: str = "us-east-1", gcp_region: str = "us-central1",
                instance_types: Iterable[str] | None = None, pricing_client: Any = None,
                billing_session: Any = None, today: str | None = None) -> PriceTable:
    """The price table; with ``mode="live"``, the numbers the two price APIs give, where they give one.

    ``pricing_client`` (a boto3 ``pricing`` client) and ``billing_session`` (anything with
    ``get(url, params=, timeout=)`` returning a requests-like response, e.g. google-auth's
    AuthorizedSession) are made from the default credentials when not given.
    """
    table = table_prices()
    if mode == "table":
        return table
    if mode != "live":
        raise ValueError(f"prices mode {mode!r}: choose table or live")
    today = today or _dt.date.today().isoformat()
    table = replace(table, mode="live")
    types = list(instance_types or _aws.INSTANCE_TYPES)
    try:
        if pricing_client is None:
            import boto3  # only here: the table needs no SDK

            # a fresh session: the credentials as they are now, not those boto3.DEFAULT_SESSION cached earlier
            pricing_client = boto3.session.Session().client("pricing", region_name="us-east-1")  # the API's endpoint region
        found, problems = _aws_live(pricing_client, aws_region, types)
    except Exception as exc:
        found, problems = {}, [f"{type(exc).__name__}: {exc}"]
    table = table.with_overrides(_as_prices(found, table, PRICE_LIST_API, today),
                                 f"AWS Price List API: {len(found)} price(s) read live"
                                 + (f"; the table kept where it failed ({'; '.join(problems)[:500]})" if problems else ""))
    try:
        if billing_session is None:
            import google.auth
            from google.auth.transport.requests import AuthorizedSession

            credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-billing.readonly"])
            billing_session = AuthorizedSession(credentials)
        gfound, gproblems = _gcp_live(billing_session, gcp_region)
    except Exception as exc:
        gfound, gproblems = {}, [f"{type(exc).__name__}: {exc}"]
    return table.with_overrides(_as_prices(gfound, table, CATALOG_API, today),
                                f"Cloud Billing Catalog API: {len(gfound)} price(s) read live"
                                + (f"; the table kept ({'; '.join(gproblems)[:500]})" if gproblems else ""))
