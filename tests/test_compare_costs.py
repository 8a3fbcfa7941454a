"""segany compare's cost half: the price table (table and live), the workload file, the monthly
cost model against hand arithmetic, and break-even points. Fast, no network."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from deploy.aws import instances as aws_instances
from deploy.compare import costs, prices, workload
from deploy.compare.costs import (CloudRun, CloudRunJob, SageMakerAsync, SageMakerBatch, SageMakerRealtime, SageMakerServerless,
                                  Timing, break_even, monthly_cost)
from deploy.compare.prices import Price, load_prices, parse_aws_products, parse_gcp_skus, table_prices
from deploy.compare.workload import Demand, RequestKind, TrafficProfile
from deploy.gcp import prices as gcp_prices
from deploy.limits import SAGEMAKER

MONTH_DAYS = 730 / 24  # 30.416666...
# One interactive session: a first prompt (encoder) 20 s, cached prompts 0.1 s, everything 60 s.
TIMING = Timing(point=20.0, point_cached=0.1, everything=60.0, cold_start_s=4.0)
KINDS = (RequestKind("point", 0.1, 40_000), RequestKind("point_cached", 0.8, 40_000),
         RequestKind("everything", 0.1, 1_500_000))
MEAN_S = 0.1 * 20 + 0.8 * 0.1 + 0.1 * 60  # = 8.08 s per request
# Profile A: 5 sessions of 10 a day, 2 h apart (each session scales to zero afterwards).
QUIET = Demand(TrafficProfile(requests_per_day=50, burst_size=10, think_time_s=8, idle_gap_s=7200), KINDS, 1_000_000)
# Profile B: 100 sessions of 20 a day, 5 min apart (instances stay up from the first to the last).
BUSY = Demand(TrafficProfile(requests_per_day=2000, burst_size=20, think_time_s=5, idle_gap_s=300), KINDS, 1_000_000)
# bytes in: point and everything send 1,000,000 + 200, a cached prompt 200; out: masks.
BYTES = (0.1 * 1_000_200 + 0.8 * 200 + 0.1 * 1_000_200) + (0.1 * 40_000 + 0.8 * 40_000 + 0.1 * 1_500_000)
GB = BYTES / 1e9  # 386,200 bytes = 0.0003862 GB per request


def approx(x):
    return pytest.approx(x, rel=1e-9, abs=1e-12)


# --- the table -------------------------------------------------------------------------------
def test_table_reuses_the_deploy_prices_and_cites_every_number():
    table = table_prices()
    assert table.mode == "table"
    assert table.usd("sagemaker.hosting_hour.ml.g5.xlarge") == aws_instances.INSTANCE_TYPES["ml.g5.xlarge"].usd_per_hour
    assert table.usd("sagemaker.serverless.gb_second") == aws_instances.SERVERLESS_GB_SECOND_USD
    assert table.usd("cloudrun.request.vcpu_second") == gcp_prices.REQUEST_BASED["vcpu_second"]
    assert table.usd("cloudrun.instance.gib_second") == gcp_prices.INSTANCE_BASED["gib_second"]
    assert table.usd("cloudrun.gpu_second.nvidia-l4.nonzonal") == gcp_prices.GPU_SECOND[("nvidia-l4", False)]
    for price in table.prices:
        assert "https://" in price.source and price.read_on.startswith("2026-12"), price
    assert len({p.key for p in table.prices}) == len(table.prices)


# --- live: parsing recorded-shape answers, and the fallback -----------------------------------------
def _aws_product(usagetype, unit, usd, **attrs):
    """One PriceList entry as GetProducts returns it: a JSON string (Price List API reference)."""
    return json.dumps({
        "product": {"productFamily": "ML Instance", "sku": "SKU" + usagetype,
                    "attributes": {"servicecode": "AmazonSageMaker", "regionCode": "us-east-1",
                                   "usagetype": usagetype, **attrs}},
        "serviceCode": "AmazonSageMaker",
        "terms": {"OnDemand": {"SKU.JRTCKXETXF": {"priceDimensions": {"SKU.JRTCKXETXF.6YS6EN2CT7": {
            "unit": unit, "pricePerUnit": {"USD": f"{usd:.10f}"}, "description": "..."}},
            "sku": "SKU", "effectiveDate": "2026-12-01T00:00:00Z"}}},
        "version": "20261201", "publicationDate": "2026-12-01T00:00:00Z"})


AWS_PAGES = [
    {"FormatVersion": "aws_v1", "NextToken": "page2", "PriceList": [
        _aws_product("USE1-Host:ml.m5.xlarge", "Hrs", 0.2304, instanceName="ml.m5.xlarge"),
        _aws_product("USE1-Tsform:ml.m5.xlarge", "Hrs", 0.2304, instanceName="ml.m5.xlarge")]},
    {"FormatVersion": "aws_v1", "PriceList": [
        _aws_product("USW2-Host:ml.m5.xlarge", "Hrs", 0.99, instanceName="ml.m5.xlarge", regionCode="us-west-2")]},
]
GCP_SKUS = {"skus": [
    {"name": "services/152E-C115-5142/skus/A", "skuId": "A", "description": "Services CPU (Request-based billing) in us-central1",
     "category": {"serviceDisplayName": "Cloud Run", "resourceFamily": "Compute", "resourceGroup": "CPU", "usageType": "OnDemand"},
     "serviceRegions": ["us-central1"],
     "pricingInfo": [{"summary": "", "pricingExpression": {"usageUnit": "s", "displayQuantity": 1, "tieredRates": [
         {"startUsageAmount": 0, "unitPrice": {"currencyCode": "USD", "units": "0", "nanos": 0}},
         {"startUsageAmount": 180000, "unitPrice": {"currencyCode": "USD", "units": "0", "nanos": 25000}}]}}]},
    {"name": "services/152E-C115-5142/skus/B", "skuId": "B", "description": "Services Memory (Instance-based billing) in us-central1",
     "category": {"usageType": "OnDemand"}, "serviceRegions": ["us-central1"],
     "pricingInfo": [{"pricingExpression": {"usageUnit": "GiBy.s", "tieredRates": [
         {"startUsageAmount": 0, "unitPrice": {"currencyCode": "USD", "units": "0", "nanos": 2100}}]}}]},
    {"name": "services/152E-C115-5142/skus/C", "skuId": "C", "description": "Requests",
     "category": {"usageType": "OnDemand"}, "serviceRegions": ["global"],
     "pricingInfo": [{"pricingExpression": {"usageUnit": "count", "tieredRates": [
         {"startUsageAmount": 0, "unitPrice": {"units": "0", "nanos": 0}},
         {"startUsageAmount": 2000000, "unitPrice": {"units": "0", "nanos": 400}}]}}]},
    {"name": "services/152E-C115-5142/skus/D", "skuId": "D",
     "description": "Services NVIDIA L4 GPU without zonal redundancy in us-central1",
     "category": {"usageType": "OnDemand"}, "serviceRegions": ["us-central1"],
     "pricingInfo": [{"pricingExpression": {"usageUnit": "s", "tieredRates": [
         {"startUsageAmount": 0, "unitPrice": {"units": "0", "nanos": 186700}}]}}]},
    {"name": "services/152E-C115-5142/skus/E", "skuId": "E", "description": "Services CPU (Request-based billing) in europe-west1",
     "category": {"usageType": "OnDemand"}, "serviceRegions": ["europe-west1"],
     "pricingInfo": [{"pricingExpression": {"usageUnit": "s", "tieredRates": [
         {"startUsageAmount": 0, "unitPrice": {"units": "1", "nanos": 0}}]}}]},
]}


def test_parse_aws_price_list():
    found = parse_aws_products(AWS_PAGES[0]["PriceList"] + AWS_PAGES[1]["PriceList"])
    assert found == {"sagemaker.hosting_hour.ml.m5.xlarge": approx(0.2304), "sagemaker.batch_hour.ml.m5.xlarge": approx(0.2304)}
    per_memory = _aws_product("USE1-ServerlessInf:Mem-4GB", "Second", 0.00008, memorySize="4096 MB")
    assert parse_aws_products([per_memory]) == {"sagemaker.serverless.gb_second": approx(0.00002)}


def test_parse_gcp_skus():
    found = parse_gcp_skus(GCP_SKUS["skus"], "us-central1")
    assert found == {"cloudrun.request.vcpu_second": approx(0.000025), "cloudrun.request.free_vcpu_seconds": 180000,
                     "cloudrun.instance.gib_second": approx(0.0000021), "cloudrun.request.million_requests": approx(0.40),
                     "cloudrun.request.free_requests": 2000000, "cloudrun.gpu_second.nvidia-l4.nonzonal": approx(0.0001867)}


class FakePricing:
    def __init__(self):
        self.calls = []

    def get_products(self, **kwargs):
        self.calls.append(kwargs)
        fields = {f["Field"]: f["Value"] for f in kwargs["Filters"]}
        if "usagetype" in fields:  # a filter the API refuses: that query keeps the table's figure
            error = type("ClientError", (Exception,), {})
            raise error("ValidationException: Invalid filter type CONTAINS")
        if fields.get("instanceName") != "ml.m5.xlarge":
            return {"FormatVersion": "aws_v1", "PriceList": []}
        return AWS_PAGES[1] if kwargs.get("NextToken") == "page2" else AWS_PAGES[0]


class FakeResponse:
    def __init__(self, body):
        self.body = body

    def raise_for_status(self):
        pass

    def json(self):
        return self.body


class FakeSession:
    def __init__(self):
        self.urls = []

    def get(self, url, params=None, timeout=None):
        self.urls.append((url, dict(params)))
        if "pageToken" not in params:
            return FakeResponse({"skus": GCP_SKUS["skus"][:2], "nextPageToken": "t2"})
        return FakeResponse({"skus": GCP_SKUS["skus"][2:]})


def test_live_reads_both_apis_and_keeps_the_table_elsewhere():
    client, session = FakePricing(), FakeSession()
    table = load_prices("live", pricing_client=client, billing_session=session, today="2026-12-07")
    assert table.mode == "live"
    live = table.get("sagemaker.hosting_hour.ml.m5.xlarge")
    assert live.usd == approx(0.2304) and live.read_on == "2026-12-07" and "Price List" in live.source
    assert table.usd("sagemaker.hosting_hour.ml.g5.xlarge") == aws_instances.INSTANCE_TYPES["ml.g5.xlarge"].usd_per_hour
    assert table.usd("sagemaker.serverless.gb_second") == aws_instances.SERVERLESS_GB_SECOND_USD  # refused: kept
    assert table.get("cloudrun.request.vcpu_second").source == prices.CATALOG_API
    assert table.usd("cloudrun.instance.vcpu_second") == gcp_prices.INSTANCE_BASED["vcpu_second"]
    assert any("ServerlessInf" in n and "ClientError" in n for n in table.notes)
    assert any(c.get("NextToken") == "page2" for c in client.calls)  # paged
    assert [p.get("pageToken") for _, p in session.urls] == [None, "t2"]
    assert all(u == prices.CATALOG_API for u, _ in session.urls)
    assert {f["Field"]: f["Value"] for f in client.calls[0]["Filters"]}["regionCode"] == "us-east-1"


def test_live_without_credentials_falls_back_with_a_note(monkeypatch, tmp_path):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    table = load_prices("live", instance_types=["ml.m5.xlarge"])
    base = table_prices()
    assert [(p.key, p.usd) for p in table.prices] == [(p.key, p.usd) for p in base.prices]
    assert "0 price(s) read live" in table.notes[0] and "NoCredentialsError" in table.notes[0]
    assert "0 price(s) read live" in table.notes[1] and "DefaultCredentialsError" in table.notes[1]
    with pytest.raises(ValueError):
        load_prices("cached")


# --- the workload ----------------------------------------------------------------------------
def test_default_workload_follows_the_seed():
    w = workload.load_workload()
    assert w.model == "vit_h" and w.name == "seed-interactive"
    assert [i.id for i in w.images] == ["dog", "groceries", "truck", "phone-12mp", "phone-12mp-fine"]
    assert all(i.path.is_file() for i in w.images if i.path)
    assert sum(k.share for k in w.kinds) == approx(1)
    assert w.profile == TrafficProfile(50, 10, 8, 7200) and w.profile.bursts_per_day == 5


def test_generated_phone_photo_is_over_the_serverless_cap(tmp_path):
    w = workload.load_workload()
    phone = next(i for i in w.images if i.id == "phone-12mp")
    only = replace(w, images=(phone,))
    size = workload.image_sizes(workload.materialize(only, tmp_path))["phone-12mp"]
    assert SAGEMAKER["serverless"].request_bytes < size < SAGEMAKER["realtime"].request_bytes
    assert workload.materialize(only, tmp_path)["phone-12mp"].stat().st_size == size  # reused
    over = workload.over_request_caps({"dog": 99_846, "phone-12mp": size, "fine": 8_000_000})
    assert over["sagemaker-serverless"] == ("phone-12mp", "fine") and over["sagemaker-realtime"] == ("fine",)
    assert over["sagemaker-async"] == over["cloudrun"] == ()


def test_workload_json_and_its_checks(tmp_path):
    data = {"name": "x", "model": "vit_b",
            "images": [{"id": "small", "generate": {"width": 320, "height": 240, "min_bytes": 20_000, "max_bytes": 60_000}}],
            "mix": {"point": 1, "point_cached": 3, "response_bytes": {"point": 10}},
            "traffic": {"requests_per_day": 40, "burst_size": 4}}
    path = tmp_path / "w.json"
    path.write_text(json.dumps(data))
    w = workload.load_workload(path)
    assert [(k.name, k.share, k.response_bytes) for k in w.kinds] == [("point", 0.25, 10), ("point_cached", 0.75, 40_000)]
    sizes = workload.image_sizes(workload.materialize(w, tmp_path / "images"))
    assert 20_000 <= sizes["small"] <= 60_000
    d = w.demand(sizes)
    assert d.mean_bytes_in() == approx(0.25 * (sizes["small"] + 200) + 0.75 * 200)
    for bad in ({**data, "images": [{"id": "a", "path": "a.jpg", "generate": {}}]},
                {**data, "mix": {"point_cached": 1}}, {**data, "traffic": {"requests_per_day": 0}}, {**data, "extra": 1}):
        with pytest.raises(ValueError):
            workload.parse_workload(bad, tmp_path)


# --- monthly costs against hand arithmetic ----------------------------------------------------------
def test_profile_a_quiet_sessions_by_hand():
    n = 50 * MONTH_DAYS  # 1,520.83 requests a month
    data = n * GB * 0.016
    assert MEAN_S == approx(8.08)
    # real-time: billed 24/7 whatever the traffic
    assert monthly_cost(SageMakerRealtime(TIMING), QUIET).usd_month == approx(730 * 0.23 + data)
    # serverless 6144 MB: only the seconds of inference, 6 GB each
    assert monthly_cost(SageMakerServerless(TIMING), QUIET).usd_month == approx(n * 8.08 * 6 * 0.00002 + data)
    # async from zero: each of 5 sessions launches an instance (300 s), runs the burst
    # (10 x 8.08 s + 9 x 8 s think = 152.8 s) and idles 900 s before scaling in
    async_ = monthly_cost(SageMakerAsync(replace(TIMING, cold_start_s=300)), QUIET)
    alive = 5 * (300 + 152.8 + 900)  # 6,764 s a day
    s3 = n * (2 * 0.005 + 0.0004) / 1000 + 50 * 1 * GB * 0.023
    assert async_.usd_month == approx(alive * MONTH_DAYS / 3600 * 0.23 + data + s3)
    # batch: one job a day, 300 s start + 50 x 8.08 s of work
    batch = monthly_cost(SageMakerBatch(replace(TIMING, cold_start_s=300)), QUIET)
    assert batch.usd_month == approx((300 + 50 * 8.08) * MONTH_DAYS / 3600 * 0.23)
    # Cloud Run request-based, 4 vCPU 6 GiB, no free tier: busy seconds + 5 cold starts of 4 s
    billed = (50 * 8.08 + 5 * 4) * MONTH_DAYS  # 12,896.67 s
    request = monthly_cost(CloudRun(TIMING, free_tier=False), QUIET)
    assert request.usd_month == approx(4 * billed * 0.000024 + 6 * billed * 0.0000025 + n / 1e6 * 0.40)
    assert monthly_cost(CloudRun(TIMING), QUIET).usd_month == 0  # inside the free tier
    # instance-based: each session's instance lives 4 s start + 152.8 s + 900 s idle
    lived = 5 * (4 + 152.8 + 900) * MONTH_DAYS  # 160,721.67 s
    instance = monthly_cost(CloudRun(TIMING, billing="instance"), QUIET)
    assert instance.usd_month == approx((4 * lived - 240_000) * 0.000018 + (6 * lived - 450_000) * 0.000002)
    l4 = monthly_cost(CloudRun(TIMING, cpu=4, memory_gib=16, billing="instance", gpu="nvidia-l4",
                               zonal_redundancy=False, free_tier=False), QUIET)
    assert l4.usd_month == approx(lived * (4 * 0.000018 + 16 * 0.000002 + 0.0001867))
    assert "0.0001867" in l4.formula and "5 bursts x (4 s start + 152.8 s burst + 900 s idle)" in l4.formula
    # a Cloud Run job per request: each of 50 tasks a day starts (4 s) and works (8.08 s), instance-based rates
    tasks = (50 * 4 + 50 * 8.08) * MONTH_DAYS  # 18,375.83 s
    job = monthly_cost(CloudRunJob(TIMING, tasks_per_day=50), QUIET)
    assert job.usd_month == approx(max(4 * tasks - 240_000, 0) * 0.000018 + max(6 * tasks - 450_000, 0) * 0.000002) == 0
    assert monthly_cost(CloudRunJob(TIMING, tasks_per_day=50, free_tier=False), QUIET).usd_month == approx(
        4 * tasks * 0.000018 + 6 * tasks * 0.000002)  # $1.54


def test_profile_b_busy_day_by_hand():
    n = 2000 * MONTH_DAYS
    data = n * GB * 0.016
    # 100 bursts of 20 x 8.08 s + 19 x 5 s = 256.6 s; 300 s gaps < 900 s: one instance from the first
    # burst to the last, then 900 s idle
    burst = 20 * 8.08 + 19 * 5
    chain = 100 * burst + 99 * 300 + 900  # 56,260 s, plus the day's one cold start
    assert monthly_cost(SageMakerServerless(TIMING, memory_mb=3072), BUSY).usd_month == approx(n * 8.08 * 3 * 0.00002 + data)
    async_ = monthly_cost(SageMakerAsync(replace(TIMING, cold_start_s=300), instance_type="ml.c5.xlarge"), BUSY)
    s3 = n * (2 * 0.005 + 0.0004) / 1000 + 2000 * 1 * GB * 0.023
    assert async_.usd_month == approx((300 + chain) * MONTH_DAYS / 3600 * 0.204 + data + s3)
    billed = (2000 * 8.08 + 1 * 4) * MONTH_DAYS
    request = monthly_cost(CloudRun(TIMING), BUSY)
    assert request.usd_month == approx((4 * billed - 180_000) * 0.000024 + (6 * billed - 360_000) * 0.0000025)  # < 2M requests
    lived = (4 + chain) * MONTH_DAYS
    assert monthly_cost(CloudRun(TIMING, billing="instance", free_tier=False), BUSY).usd_month == approx(
        lived * (4 * 0.000018 + 6 * 0.000002))
    # a min instance: request-based busy time, plus the idle rest of the day at instance-based rates
    warm = monthly_cost(CloudRun(TIMING, min_instances=1, free_tier=False), BUSY)
    busy = 2000 * 8.08 * MONTH_DAYS
    idle = (86400 - 2000 * 8.08) * MONTH_DAYS
    assert warm.usd_month == approx(busy * (4 * 0.000024 + 6 * 0.0000025) + n / 1e6 * 0.40
                                    + idle * (4 * 0.000018 + 6 * 0.000002))
    # two real-time instances: 2 x 730 h
    assert monthly_cost(SageMakerRealtime(TIMING, "ml.g4dn.xlarge", 2), BUSY).usd_month == approx(2 * 730 * 0.736 + data)


def test_more_work_than_a_day_holds():
    heavy = QUIET.with_requests_per_day(20_000)  # 20,000 x 8.08 s = 161,600 s > 86,400 s
    rt = monthly_cost(SageMakerRealtime(TIMING), heavy)
    assert rt.notes and "needs 2 instance(s)" in rt.notes[0]
    inst = monthly_cost(CloudRun(TIMING, billing="instance", free_tier=False), heavy)
    assert inst.usd_month == approx(161_600 * MONTH_DAYS * (4 * 0.000018 + 6 * 0.000002))
    with pytest.raises(ValueError):
        CloudRun(TIMING, gpu="nvidia-l4")  # a GPU needs instance-based billing
    with pytest.raises(ValueError):
        CloudRun(TIMING, billing="instance", gpu="nvidia-l4", cpu=4, memory_gib=8)  # L4: at least 16 GiB
    with pytest.raises(ValueError):
        SageMakerServerless(TIMING, memory_mb=8192)  # 6144 at most


# --- break-even ------------------------------------------------------------------------------
def _no_data(table):
    return table.with_overrides({"sagemaker.data_gb": Price("sagemaker.data_gb", 0.0, "USD per GB", "test", "test")})


def test_break_even_against_hand_arithmetic():
    table = _no_data(table_prices())
    timing = replace(TIMING, cold_start_s=0)
    rt = SageMakerRealtime(timing)
    sl = SageMakerServerless(timing)
    cr = CloudRun(timing, free_tier=False)
    points = break_even([rt, sl, cr], QUIET, (1, 100_000), prices=table)
    # both pay-per-use targets are linear in requests from 0: no crossing between them
    assert {(p.cheaper_below, p.cheaper_above) for p in points} == {("sagemaker-serverless", "sagemaker-realtime"),
                                                                    ("cloudrun", "sagemaker-realtime")}
    by = {p.cheaper_below: p.requests_per_day for p in points}
    # 730 h x $0.23 = requests/day x 30.4167 days x per-request cost
    assert by["sagemaker-serverless"] == pytest.approx(730 * 0.23 / (MONTH_DAYS * 8.08 * 6 * 0.00002), rel=1e-6)  # ~5,698
    per_request = 8.08 * (4 * 0.000024 + 6 * 0.0000025) + 0.40 / 1e6
    assert by["cloudrun"] == pytest.approx(730 * 0.23 / (MONTH_DAYS * per_request), rel=1e-6)  # ~6,152


def test_break_even_with_the_free_tier_and_scale_to_zero():
    table = _no_data(table_prices())
    timing = replace(TIMING, cold_start_s=0)
    # Cloud Run request-based with its free tier against serverless without: free until 4 vCPU x
    # seconds pass 180,000 (memory 6 x s passes 360,000 later), then 4 x $0.000024 = $0.000096 per
    # second against serverless' 6 x $0.00002 = $0.00012: Cloud Run stays cheaper, no crossing.
    assert break_even([CloudRun(timing), SageMakerServerless(timing)], QUIET, (1, 100_000), prices=table) == []
    # async (launch 0 s, 900 s idle tail per session) against real-time: async costs
    # 5 x 10-request sessions: R/10 x (R-independent 152.8 s burst + 900 s) until the day is full
    async_ = SageMakerAsync(timing)
    (point,) = break_even([async_, SageMakerRealtime(timing)], QUIET, (1, 1_000), prices=table,
                          )  # S3 costs are small but not zero: solve with them
    per_session_s = 152.8 + 900
    s3_per_request = (2 * 0.005 + 0.0004) / 1000 * MONTH_DAYS + 1 * GB * 0.023
    # R/10 x 1052.8 s x 30.4167 / 3600 x 0.23 + R x s3 = 167.9
    expected = 167.9 / (per_session_s / 10 * MONTH_DAYS / 3600 * 0.23 + s3_per_request)
    assert point.requests_per_day == pytest.approx(expected, rel=1e-6)  # ~820 a day
    assert (point.cheaper_below, point.cheaper_above) == ("sagemaker-async", "sagemaker-realtime")


def test_bench_timing_reads_the_measured_figures():
    vit_b = costs.bench_timing("vit_b")
    assert vit_b.point == approx(4.769881256004737) and vit_b.point_cached == approx(0.08789624299970455)
    assert vit_b.everything == approx(63.32619323099789) and vit_b.cold_start_s == approx(2.000923245010199)
    vit_h = costs.bench_timing("vit_h")
    assert vit_h.point == approx(1 / 0.037373813577752296 + 0.08789624299970455)
    with pytest.raises(ValueError, match="measure"):
        costs.bench_timing("tiny")


def test_default_targets_follow_the_deploy_defaults():
    timing = costs.bench_timing("vit_h")
    targets = costs.default_targets("vit_h", timing, gpu_timing=replace(timing, point=1.0))
    by = {t.name: t for t in targets}
    assert list(by) == ["sagemaker-realtime", "sagemaker-serverless", "sagemaker-async", "sagemaker-batch",
                        "cloudrun", "cloudrun-instance", "cloudrun-job", "cloudrun-l4"]
    assert by["sagemaker-serverless"].memory_mb == 5120  # vit_h: 3,650 MB peak x 1.25 = 4,563 MB
    assert (by["cloudrun"].cpu, by["cloudrun"].memory_gib) == (4, 6)  # deploy/gcp/settings.py DEFAULT_RESOURCES
    assert by["sagemaker-async"].timing.cold_start_s == 300 and by["cloudrun"].timing == timing
    assert (by["cloudrun-l4"].cpu, by["cloudrun-l4"].memory_gib, by["cloudrun-l4"].billing) == (4, 16, "instance")
    quiet = costs.monthly_costs(targets, QUIET)
    assert set(quiet) == set(by) and all(c.usd_month >= 0 and c.lines for c in quiet.values())
