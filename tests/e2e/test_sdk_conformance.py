"""The official Huawei Cloud Python SDK against the simulator: the simulator accepts the SDK's
AK/SK signatures, rejects a wrong secret key as the cloud does, and the SDK parses its responses
into its models with the expected field values."""
import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkevs.v2 import EvsClient, ShowJobRequest, ShowJobResponse
from huaweicloudsdksdrs.v1 import SdrsClient, ShowJobStatusRequest, ShowJobStatusResponse

AK = "DEMOACCESSKEY0000001"
SK = "demo-secret-key-for-the-simulator-only"
PROJECT = "0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"


def client(cls, url, sk=SK):
    cfg = HttpConfig.get_default_config()
    cfg.timeout = 10
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
    import requests
    return requests.get(sim.url + "/_sim/jobs", timeout=5).json()["requests_total"]
