"""The official, unmodified `ngrok-api` Python client (pinned in requirements-api.txt) against
a real `meridian serve`."""

import ngrok
import pytest
from ngrok.datatypes import ReservedDomainCertPolicy as Policy
from ngrok.datatypes import ReservedDomainResolvesToEntry as Target


def targets(*values):
    return [Target(None, {"value": v}) for v in values]


def values(domain):
    return [t.value for t in domain.resolves_to]


@pytest.fixture
def client(server):
    return ngrok.Client(server.api_key, base_url=server.url)


def test_reserved_domain_lifecycle_with_resolves_to(client, server):
    policy = Policy(None, {"authority": "letsencrypt", "private_key_type": "ecdsa"})
    rd = client.reserved_domains.create(
        domain="api.example.com",
        description="Pinned to US and Europe for compliance reasons",
        certificate_management_policy=policy,
        resolves_to=targets("us-cal-1", "eu"),
    )
    assert rd.id.startswith("rd_")
    assert rd.uri == f"{server.url}/reserved_domains/{rd.id}"
    assert values(rd) == ["us-cal-1", "eu"]
    assert rd.cname_target.endswith(".cname.meridian.test")
    assert rd.certificate is None
    assert rd.certificate_management_policy.private_key_type == "ecdsa"
    # Nothing has been issued, and the status says so.
    assert rd.certificate_management_status.renews_at is None
    assert rd.certificate_management_status.provisioning_job.error_code == "NOT_SUPPORTED"
    # Every property the client knows reads without a KeyError.
    for name in ["created_at", "description", "metadata", "domain", "region", "acme_challenge_cname_target"]:
        getattr(rd, name)

    got = client.reserved_domains.get(rd.id)
    assert (got.domain, values(got)) == ("api.example.com", ["us-cal-1", "eu"])

    updated = client.reserved_domains.update(rd.id, resolves_to=targets("us-cal-1", "eu", "jp"))
    assert values(updated) == ["us-cal-1", "eu", "jp"]
    assert updated.description == "Pinned to US and Europe for compliance reasons"

    unpinned = client.reserved_domains.update(rd.id, resolves_to=[])
    assert values(unpinned) == []
    assert values(client.reserved_domains.get(rd.id)) == []

    client.reserved_domains.delete(rd.id)
    with pytest.raises(ngrok.NotFoundError):
        client.reserved_domains.get(rd.id)


def test_description_only_update_unpins_because_the_client_sends_an_empty_list(client):
    """ngrok-api 0.19.0 always sends `resolves_to: []` on update, and `[]` means un-pin (the
    README documents this): re-send `resolves_to` with every update to keep a pin."""
    rd = client.reserved_domains.create(domain="keep.example.com", resolves_to=targets("eu"))
    after = client.reserved_domains.update(rd.id, description="new words")
    assert after.description == "new words"
    assert values(after) == []
    kept = client.reserved_domains.update(rd.id, description="again", resolves_to=targets("eu"))
    assert values(kept) == ["eu"]


def test_bad_region_raises_invalid_region_target(client):
    with pytest.raises(ngrok.Error) as err:
        client.reserved_domains.create(domain="b.example.com", resolves_to=targets("banana"))
    assert err.value.http_status_code == 400
    assert err.value.error_code == "invalid_region_target"
    assert "'banana' is invalid. use one of the following acceptable values: us,us-cal-1,eu,au,ap,jp,sa,in" in str(err.value)
    assert [d.domain for d in client.reserved_domains.list()] == []


def test_list_follows_next_page_uri_across_more_than_100(client):
    created = [client.reserved_domains.create(domain=f"d{i:03}.example.com").id for i in range(105)]
    seen = [d.id for d in client.reserved_domains.list()]
    assert seen == list(reversed(created)), "newest first, each exactly once, over two pages"
    first = client.reserved_domains.list(limit="100")
    assert first.next_page_uri.startswith(client.http_client.base_url + "/reserved_domains?before_id=")
    small = client.reserved_domains.list(limit="5")
    assert len(small.reserved_domains) == 5


def test_reserved_addrs_and_credentials(client):
    addr = client.reserved_addrs.create(description="db", region="eu")
    assert (addr.region, addr.addr) == ("eu", "eu.tcp.meridian.test:20000")
    assert client.reserved_addrs.update(addr.id, description="primary db").description == "primary db"
    assert [a.id for a in client.reserved_addrs.list()] == [addr.id]
    client.reserved_addrs.delete(addr.id)
    with pytest.raises(ngrok.NotFoundError):
        client.reserved_addrs.get(addr.id)

    cred = client.credentials.create(description="laptop", acl=["bind:*.example.com"])
    assert cred.token.startswith("mrd_tok_")
    again = client.credentials.get(cred.id)
    assert again.token is None and again.acl == ["bind:*.example.com"]
    ids = [c.id for c in client.credentials.list()]
    assert cred.id in ids and len(ids) == 2  # and the bootstrap credential
    client.credentials.delete(cred.id)
