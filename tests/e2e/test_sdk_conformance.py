"""The official Huawei Cloud Python SDK against the simulator: the simulator accepts the SDK's
AK/SK signatures, rejects a wrong secret key as the cloud does, and the SDK parses its responses
into its models with the expected field values: the job API (EVS, SDRS), Cloud Trace Service's
trace list and SDRS's task centre."""
import ast
import json
import time
from datetime import datetime, timezone

import pytest
import requests
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkcts.v3 import CtsClient, ListTracesRequest, ListTracesResponse, MetaData, Traces, UserInfo
from huaweicloudsdkevs.v2 import EvsClient, ShowJobRequest, ShowJobResponse
from huaweicloudsdksdrs.v1 import (FailureJobParams, ListFailureJobsRequest, ListFailureJobsResponse,
                                   SdrsClient, ShowJobStatusRequest, ShowJobStatusResponse)

AK = "DEMOACCESSKEY0000001"
SK = "demo-secret-key-for-the-simulator-only"
PROJECT = "0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"


def client(cls, url, sk=SK, retry_times=None):
    cfg = HttpConfig.get_default_config()
    cfg.timeout = 10
    if retry_times is not None:
        cfg.retry_times = retry_times
    creds = BasicCredentials(AK, sk, PROJECT)
    return cls.new_builder().with_http_config(cfg).with_credentials(creds).with_endpoints([url]).build()


def as_dict(model):
    return model.to_dict() if hasattr(model, "to_dict") else model


@pytest.fixture
def sim(start_simulator):
    return start_simulator(fleet=60, seed=11)


def test_evs_show_job_parses_every_field(sim):
    evs = client(EvsClient, sim.url)
    evs_jobs = [j for j in sim.jobs() if j["service"] == "evs"]
    assert evs_jobs
    seen_sub_jobs = False
    for j in evs_jobs:
        r = evs.show_job(ShowJobRequest(job_id=j["job_id"]))
        assert isinstance(r, ShowJobResponse)
        truth = sim.body(j["job_id"])
        assert r.job_id == truth["job_id"]
        assert r.job_type == truth["job_type"]
        assert r.status == truth["status"]
        assert r.begin_time == truth["begin_time"]
        assert r.end_time == truth["end_time"]
        assert r.error_code == truth["error_code"]
        assert r.fail_reason == truth["fail_reason"]
        ents = r.entities
        if "sub_jobs" in truth["entities"]:
            seen_sub_jobs = True
            assert [s.job_id for s in ents.sub_jobs] == [s["job_id"] for s in truth["entities"]["sub_jobs"]]
            assert [s.status for s in ents.sub_jobs] == [s["status"] for s in truth["entities"]["sub_jobs"]]
            assert [s.entities.volume_id for s in ents.sub_jobs] == \
                [s["entities"]["volume_id"] for s in truth["entities"]["sub_jobs"]]
        else:
            assert ents.volume_id == truth["entities"]["volume_id"]
            assert ents.size == truth["entities"]["size"]
            assert ents.volume_type == truth["entities"]["volume_type"]
            assert ents.name == truth["entities"]["name"]
    assert seen_sub_jobs, "the fleet should include a batch job with sub-jobs"


def test_sdrs_show_job_status_parses_every_field(sim):
    sdrs = client(SdrsClient, sim.url)
    sdrs_jobs = [j for j in sim.jobs() if j["service"] == "sdrs"]
    assert sdrs_jobs
    for j in sdrs_jobs:
        r = sdrs.show_job_status(ShowJobStatusRequest(job_id=j["job_id"]))
        assert isinstance(r, ShowJobStatusResponse)
        truth = sim.body(j["job_id"])
        for field in ("job_id", "job_type", "status", "begin_time", "end_time", "error_code", "fail_reason"):
            assert getattr(r, field) == truth[field], field
        ents = truth["entities"]
        for key in ("server_group_id", "replication_pair_id", "volume_ids", "protected_instance_id",
                    "native_server_id", "nic_id"):
            assert getattr(r.entities, key) == ents.get(key), key
        if "sub_jobs" in ents:
            assert [s.status for s in r.entities.sub_jobs] == [s["status"] for s in ents["sub_jobs"]]


def test_sdk_signature_is_verified(sim):
    job = sim.jobs()[0]["job_id"]
    before = requests_total(sim)
    with pytest.raises(ClientRequestException) as e:
        client(EvsClient, sim.url, sk="not-the-secret").show_job(ShowJobRequest(job_id=job))
    assert e.value.status_code == 401
    assert e.value.error_code == "APIGW.0301"
    assert requests_total(sim) == before, "a rejected request never reaches the job"
    # The right key goes through.
    client(EvsClient, sim.url).show_job(ShowJobRequest(job_id=job))
    assert requests_total(sim) == before + 1


def test_not_found_is_a_huawei_shaped_error(sim):
    with pytest.raises(ClientRequestException) as e:
        client(EvsClient, sim.url).show_job(ShowJobRequest(job_id="no-such-job"))
    assert e.value.status_code == 404
    assert "no-such-job" in e.value.error_msg


def requests_total(sim):
    return requests.get(sim.url + "/_sim/jobs", timeout=5).json()["requests_total"]


# Cloud Trace Service and the SDRS task centre.

def put(sim, path, body):
    r = requests.put(sim.url + path, json=body, timeout=5)
    assert r.status_code == 204, r.text


def post(sim, path, body):
    r = requests.post(sim.url + path, json=body, timeout=5)
    assert r.status_code in (200, 204), r.text


def cts_requests(sim):
    return requests.get(sim.url + "/_sim/cts/requests", timeout=5).json()


def raw_traces(sim):
    return {t["trace_id"]: t for t in requests.get(sim.url + "/_sim/cts/traces", timeout=5).json()}


def list_all_traces(cts, frm, to, limit):
    """Every page of a window, following `next` until the marker is null."""
    pages, marker = [], None
    while True:
        r = cts.list_traces(ListTracesRequest(trace_type="system", _from=frm, to=to, limit=limit, next=marker))
        assert isinstance(r, ListTracesResponse)
        assert isinstance(r.meta_data, MetaData)
        assert r.meta_data.count == len(r.traces)
        pages.append(r)
        marker = r.meta_data.marker
        if marker is None:
            return pages
        assert marker == r.traces[-1].trace_id
        assert len(pages) < 100


def test_cts_list_traces_pages_parse_into_sdk_models(sim):
    post(sim, "/_sim/cts/noise", {"count": 12, "seed": 3})
    # Traces are recorded a minute late: step past it so every job begun so far is listed.
    post(sim, "/_sim/advance", {"seconds": 120})
    cts = client(CtsClient, sim.url)
    now_ms = int(time.time() * 1000) + 120_000
    frm, to = now_ms - 3 * 3600 * 1000, now_ms + 60_000
    pages = list_all_traces(cts, frm, to, limit=25)
    traces = [t for p in pages for t in p.traces]
    assert len(pages) == -(-len(traces) // 25)
    raw = raw_traces(sim)
    assert [t.trace_id for t in traces] == [t for t in raw if frm < raw[t]["time"] < to]
    assert [t.time for t in traces] == sorted((t.time for t in traces), reverse=True), "newest first"
    assert len(cts_requests(sim)) == len(pages)
    assert [q["next"] for q in cts_requests(sim)] == [None] + [p.meta_data.marker for p in pages[:-1]]

    as_string = as_object = int_codes = 0
    jobs_by_id = {j["job_id"]: j for j in sim.jobs()}
    requested, results = set(), set()
    for t in traces:
        r = raw[t.trace_id]
        assert isinstance(t, Traces)
        assert isinstance(t.time, int) and t.time == r["time"]
        assert t.record_time == r.get("record_time") == r["time"] + 60_000
        assert t.trace_type in ("ApiCall", "ConsoleAction", "SystemAction")
        assert t.service_type in ("EVS", "SDRS", "ECS")
        # `code` is a string in the SDK model; an integer code arrives as its string.
        if r.get("code") is None:
            assert t.code is None
        else:
            assert t.code == str(r["code"]) and isinstance(t.code, str)
            int_codes += isinstance(r["code"], int)
        # `response` is a string in the SDK model. A JSON-string response comes through as is;
        # an object response comes through as the SDK's str() of the dict.
        response = None
        if isinstance(r.get("response"), str):
            assert t.response == r["response"]
            response = json.loads(t.response)
            as_string += 1
        elif isinstance(r.get("response"), dict):
            assert isinstance(t.response, str)
            response = ast.literal_eval(t.response)
            assert response == r["response"]
            as_object += 1
        else:
            assert t.response is None
        job_id = response.get("job_id") if isinstance(response, dict) else None
        if job_id:
            assert job_id in jobs_by_id
            assert t.service_type == jobs_by_id[job_id]["service"].upper()
            if t.trace_type == "SystemAction":
                results.add(job_id)
                assert response == sim.body(job_id), "the result record carries the job body"
                assert t.user is None
            else:
                requested.add(job_id)
                assert t.code == "202"
                assert isinstance(t.user, UserInfo) and t.user.name == r["user"]["name"]
        elif r.get("response") is not None:
            assert t.code in ("200", "400", "403", "409")
    assert as_string and as_object, (as_string, as_object)
    assert int_codes
    assert requested == set(jobs_by_id), "every job left a request record"
    # A job's result is recorded a minute after it ends.
    sim_now = time.time() + 120
    recorded = {j for j in jobs_by_id if sim.body(j)["end_time"]
                and iso_seconds(sim.body(j)["end_time"]) + 60 <= sim_now - 5}
    finished = {j for j, v in jobs_by_id.items() if v["status"] in ("SUCCESS", "FAIL")}
    assert recorded <= results <= finished
    assert len(recorded) > 20


def iso_seconds(text):
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def assert_throttled(e):
    """The SDK's throttling path: its HTTP layer treats 429 as retryable and, once its retries
    (none by default) are spent, raises ClientRequestException with status and code 429."""
    assert e.value.status_code == 429
    assert e.value.error_code == "429"
    assert "too many 429 error responses" in e.value.error_msg


def test_cts_signature_errors_and_throttling(sim):
    cts = client(CtsClient, sim.url)
    with pytest.raises(ClientRequestException) as e:
        client(CtsClient, sim.url, sk="not-the-secret").list_traces(ListTracesRequest(trace_type="system"))
    assert e.value.status_code == 401
    assert e.value.error_code == "APIGW.0301"
    assert cts_requests(sim) == [], "a rejected request is not a CTS request"
    with pytest.raises(ClientRequestException) as e:
        cts.list_traces(ListTracesRequest(trace_type="data"))
    assert (e.value.status_code, e.value.error_code) == (400, "CTS.0003")
    too_old = int(time.time() * 1000) - 8 * 86400 * 1000
    with pytest.raises(ClientRequestException) as e:
        cts.list_traces(ListTracesRequest(trace_type="system", _from=too_old, to=too_old + 1000))
    assert (e.value.status_code, e.value.error_code) == (400, "CTS.0003")
    put(sim, "/_sim/faults/cts", {"fault": {"kind": "throttle", "retry_after": None}, "times": 1})
    with pytest.raises(ClientRequestException) as e:
        cts.list_traces(ListTracesRequest(trace_type="system", limit=200))
    assert_throttled(e)
    assert isinstance(cts.list_traces(ListTracesRequest(trace_type="system", limit=200)), ListTracesResponse)
    assert [q["limit"] for q in cts_requests(sim)] == [None, None, "200", "200"]
    # With retries, the SDK gets past two 429s; the simulator saw all three requests.
    put(sim, "/_sim/faults/cts", {"fault": {"kind": "throttle", "retry_after": None}, "times": 2})
    r = client(CtsClient, sim.url, retry_times=3).list_traces(ListTracesRequest(trace_type="system", limit=5))
    assert isinstance(r, ListTracesResponse)
    assert [q["limit"] for q in cts_requests(sim)][4:] == ["5", "5", "5"]
    # Authentication comes before any fault: a refused request does not use it up.
    put(sim, "/_sim/faults/cts", {"fault": {"kind": "throttle", "retry_after": None}, "times": 1})
    raw = requests.get(sim.url + f"/v3/{PROJECT}/traces?trace_type=system", headers={"X-Auth-Token": "x"}, timeout=5)
    assert raw.status_code == 401
    with pytest.raises(ClientRequestException) as e:
        cts.list_traces(ListTracesRequest(trace_type="system"))
    assert_throttled(e)


def test_sdrs_list_failure_jobs_pages_parse_into_sdk_models(sim):
    weeks_ago = -21 * 86400
    old = [{"job_id": f"old{i:029d}", "project_id": PROJECT, "service": "sdrs",
            "job_type": "failoverProtectionGroupNoCG", "start_secs": weeks_ago - i * 3600, "init_secs": 5,
            "run_secs": 60, "outcome": {"result": "fail", "error_code": "SDRS.1201",
                                        "fail_reason": "The protection group is busy."},
            "entities": {"server_group_id": f"group-{i}"}} for i in range(3)]
    post(sim, "/_sim/jobs", old)
    failed = {j["job_id"] for j in sim.jobs() if j["service"] == "sdrs" and j["status"] == "FAIL"}
    assert {j["job_id"] for j in old} <= failed
    sdrs = client(SdrsClient, sim.url)
    seen, offset, count = [], 0, None
    while count is None or offset < count:
        r = sdrs.list_failure_jobs(ListFailureJobsRequest(limit=2, offset=offset))
        assert isinstance(r, ListFailureJobsResponse)
        assert count in (None, r.count)
        count = r.count
        assert 0 < len(r.failure_jobs) <= 2
        for f in r.failure_jobs:
            assert isinstance(f, FailureJobParams)
            truth = sim.body(f.job_id)
            assert f.job_status == "FAIL" == truth["status"]
            assert f.job_type == truth["job_type"]
            assert f.begin_time == truth["begin_time"]
            assert f.error_code == truth["error_code"]
            assert f.fail_reason == truth["fail_reason"]
            assert f.failure_status.endswith("Fail")
            assert f.resource_type in ("server_groups", "protected_instances", "replications",
                                       "disaster_recovery_drills")
            seen.append(f.job_id)
        offset += len(r.failure_jobs)
    assert set(seen) == failed and len(seen) == len(failed) == count
    begins = [sim.body(j)["begin_time"] for j in seen]
    assert begins == sorted(begins, reverse=True), "newest first"
    group = sdrs.list_failure_jobs(ListFailureJobsRequest(server_group_id="group-1"))
    assert [f.job_id for f in group.failure_jobs] == [old[1]["job_id"]]
    assert group.failure_jobs[0].failure_status == "failoverFail"
    with pytest.raises(ClientRequestException) as e:
        client(SdrsClient, sim.url, sk="not-the-secret").list_failure_jobs(ListFailureJobsRequest())
    assert e.value.status_code == 401
    put(sim, "/_sim/faults/task-center", {"fault": {"kind": "throttle", "retry_after": None}, "times": 1})
    with pytest.raises(ClientRequestException) as e:
        sdrs.list_failure_jobs(ListFailureJobsRequest())
    assert_throttled(e)
    assert sdrs.list_failure_jobs(ListFailureJobsRequest()).count == count
