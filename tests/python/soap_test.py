"""A real SOAP client against a running `linkreg serve --dev` node: zeep loads the WSDL the node
serves and calls every operation, as writer and as keeper, on success and error paths. Every
reply (and every fault's detail) is validated against the XSD the node serves, SOAP 1.1 and
SOAP 1.2 give the same answers, and hostile requests get faults and change nothing."""

import datetime
import os
import subprocess
import sys
import tempfile
import time
import traceback

import requests
import xmlschema
import zeep
from zeep.exceptions import Fault
from zeep.plugins import HistoryPlugin
from zeep.wsse.username import UsernameToken

from loopback import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.path.join(ROOT, "target", "debug", "linkreg")
NS = "http://linkreg.be/soap/LinkRegister/v1"
DEV_ORG, DEV_CBE = "Development", "0123456749"


def start_node(data):
    http = f"127.0.0.1:{free_port()}"
    node = subprocess.Popen(
        [BINARY, "serve", "--dev", "--data-dir", data,
         "--client-addr", f"127.0.0.1:{free_port()}", "--peer-addr", f"127.0.0.1:{free_port()}",
         "--http-addr", http],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return node, http


def customer(ticket="T-1"):
    return {
        "informationCustomer": {
            "ticket": ticket,
            "timestampSent": datetime.datetime.now(datetime.timezone.utc),
            "customerIdentification": {"cbeNumber": DEV_CBE},
        },
        "legalContext": "Art. 5 Law of 15 January 1990",
    }


class Session:
    """One caller's zeep client on one SOAP version, checking every reply against the XSD."""

    def __init__(self, http, token, schema, port="LinkRegisterSoap11"):
        self.history = HistoryPlugin()
        self.schema = schema
        client = zeep.Client(f"http://{http}/soap/LinkRegister?wsdl",
                             wsse=UsernameToken(DEV_ORG, token), plugins=[self.history])
        self.service = client.bind("LinkRegisterService", port)

    def validate_last(self):
        envelope = self.history.last_received["envelope"]
        body = next(e for e in envelope if e.tag.endswith("}Body"))
        payload = body[0]
        if payload.tag.endswith("}Fault"):
            detail = next(d for d in payload.iter() if d.tag == f"{{{NS}}}systemError")
            self.schema.validate(detail)
        else:
            self.schema.validate(payload)

    def call(self, operation, **kwargs):
        for _ in range(100):
            try:
                reply = getattr(self.service, operation)(**customer(), **kwargs)
            except Fault as fault:
                self.validate_last()
                if reason(fault) == "UNAVAILABLE":
                    time.sleep(0.1)
                    continue
                raise
            self.validate_last()
            return reply
        raise AssertionError("node never became available")

    def fault(self, operation, **kwargs):
        try:
            self.call(operation, **kwargs)
        except Fault as fault:
            return fault
        raise AssertionError(f"{operation} should have failed")


def reason(fault):
    if fault.detail is None:
        return None
    found = fault.detail.find(f".//{{{NS}}}reasonCode")
    return None if found is None else found.text


def expect(status, value, code=None, field=None):
    assert status.value == value, status
    if code is not None:
        assert status.code == code, status
    if field is not None:
        names = [i.fieldName for i in status.information]
        assert field in names, status


def tests(writer, keeper, writer12, http):
    # Writer: create, read back, search, update.
    created = writer.call("createLink", clientId="py", requestId=1, ssin="85073003328",
                          country="NL", keyType="PASSPORT", value="NX-123.456",
                          validityPeriod={"beginDate": datetime.date(2020, 1, 1)})
    expect(created.status, "OK", "OK")
    link = created.link
    assert link.normalizedValue == "NX123456" and link.version == 1, link
    assert created.informationCustomer.ticket == "T-1"
    assert len(created.informationServer.ticket) == 36

    retried = writer.call("createLink", clientId="py", requestId=1, ssin="85073003328",
                          country="NL", keyType="PASSPORT", value="NX-123.456",
                          validityPeriod={"beginDate": datetime.date(2020, 1, 1)})
    assert retried.link.id == link.id and retried.logIndex == created.logIndex

    exists = writer.call("createLink", ssin="85073003328", country="NL", keyType="PASSPORT",
                         value="NX123456")
    expect(exists.status, "NO_RESULT", "LINK_EXISTS", "existingLinkId")
    conflict = writer.call("createLink", ssin="17073003384", country="NL", keyType="PASSPORT",
                           value="NX123456")
    expect(conflict.status, "NO_RESULT", "LINK_CONFLICT", "existingLinkId")
    bad = writer.call("createLink", ssin="12345678901", country="NL", keyType="PASSPORT",
                      value="NX999999")
    expect(bad.status, "NO_RESULT", "INVALID_SSIN", "ssin")
    assert bad.status.information[0].fieldValue == "12345678901" and bad.link is None
    bad = writer.call("createLink", ssin="85073003328", country="XX", keyType="PASSPORT",
                      value="NX999999")
    expect(bad.status, "NO_RESULT", "UNKNOWN_COUNTRY", "country")
    bad = writer.call("createLink", ssin="85073003328", country="NL", keyType="VISA",
                      value="NX999999")
    expect(bad.status, "NO_RESULT", "UNKNOWN_KEY_TYPE", "keyType")
    bad = writer.call("createLink", ssin="85073003328", country="NL", keyType="PASSPORT",
                      value="NX999999", validityPeriod={"beginDate": "2021-02-30"})
    expect(bad.status, "NO_RESULT", "INVALID_DATE", "validityPeriod/beginDate")
    bad = writer.call("createLink", ssin="85073003328", country="NL", keyType="PASSPORT",
                      value="NX999999", validityPeriod={"beginDate": datetime.date(2022, 1, 1),
                                                        "endDate": datetime.date(2021, 1, 1)})
    expect(bad.status, "NO_RESULT", "INVALID_PERIOD")

    got = writer.call("getLink", id=link.id)
    expect(got.status, "DATA_FOUND")
    assert got.link[0].ssin == "85073003328" and got.read.nodeId == 1
    missing = writer.call("getLink", id=9999)
    expect(missing.status, "NO_RESULT", "LINK_NOT_FOUND", "id")

    found = writer.call("searchLinksBySsin", ssin="85.07.30-033.28", country="NL",
                        keyType="PASSPORT", validOn=datetime.date(2024, 6, 1),
                        consistency="LINEARIZABLE")
    expect(found.status, "DATA_FOUND")
    assert [l.id for l in found.link] == [link.id]
    none = writer.call("searchLinksBySsin", ssin="85073003328", validOn=datetime.date(2019, 1, 1))
    expect(none.status, "NO_DATA_FOUND")
    bad = writer.call("searchLinksBySsin", ssin="8507300332")
    expect(bad.status, "NO_RESULT", "INVALID_SSIN", "ssin")
    by_key = writer.call("searchLinksByForeignKey", country="nl", value="nx 123 456")
    assert [l.id for l in by_key.link] == [link.id]
    bad = writer.call("searchLinksByForeignKey", country="ZZ", value="NX123456")
    expect(bad.status, "NO_RESULT", "UNKNOWN_COUNTRY", "country")

    updated = writer.call("updateLinkValidity", id=link.id, expectedVersion=1,
                          validityPeriod={"beginDate": datetime.date(2020, 1, 1),
                                          "endDate": datetime.date(2030, 12, 31)})
    expect(updated.status, "OK")
    assert updated.link.version == 2
    assert updated.link.validityPeriod.endDate == datetime.date(2030, 12, 31)
    stale = writer.call("updateLinkValidity", id=link.id, expectedVersion=1)
    expect(stale.status, "NO_RESULT", "VERSION_MISMATCH", "expectedVersion")

    history = writer.call("getLinkHistory", id=link.id)
    assert [e.action for e in history.event] == ["create_link", "update_link_validity"]
    assert all(e.ticket == "T-1" and e.legalContext.startswith("Art. 5") for e in history.event)
    assert history.event[1].before.version == 1 and history.event[1].after.version == 2
    missing = writer.call("getLinkHistory", id=9999)
    expect(missing.status, "NO_RESULT", "LINK_NOT_FOUND")

    types = writer.call("listKeyTypes")
    codes = [k.code for k in types.keyType]
    assert "PASSPORT" in codes and "EIDAS_IDENTIFIER" in codes, codes
    rules = writer.call("listFormatRules")
    assert rules.defaultRule.minLength == 5 and not rules.formatRule

    # The keeper's operations are refused to a writer, as faults.
    for operation, kwargs in [
        ("deleteLink", {"id": link.id, "reason": "x"}),
        ("addKeyType", {"code": "VISA", "labels": {"nl": "a", "fr": "b", "de": "c", "en": "d"}}),
        ("setKeyTypeActive", {"code": "PASSPORT", "active": False}),
        ("setFormatRule", {"country": "NL", "keyType": "PASSPORT"}),
    ]:
        fault = writer.fault(operation, **kwargs)
        assert reason(fault) == "PERMISSION_DENIED", (operation, fault.message)

    # Keeper.
    added = keeper.call("addKeyType", code="VISA",
                        labels={"nl": "Visum", "fr": "Visa", "de": "Visum", "en": "Visa"})
    expect(added.status, "OK")
    assert added.keyType.active is True
    again = keeper.call("addKeyType", code="VISA",
                        labels={"nl": "Visum", "fr": "Visa", "de": "Visum", "en": "Visa"})
    expect(again.status, "NO_RESULT", "KEY_TYPE_EXISTS", "code")
    bad = keeper.call("addKeyType", code="visa card",
                      labels={"nl": "Visum", "fr": "Visa", "de": "Visum", "en": "Visa"})
    expect(bad.status, "NO_RESULT", "INVALID_KEY_TYPE_CODE", "code")
    off = keeper.call("setKeyTypeActive", code="VISA", active=False)
    assert off.keyType.active is False
    inactive = writer.call("createLink", ssin="85073003328", country="FR", keyType="VISA",
                           value="FR123456")
    expect(inactive.status, "NO_RESULT", "KEY_TYPE_INACTIVE", "keyType")
    unknown = keeper.call("setKeyTypeActive", code="NOPE", active=True)
    expect(unknown.status, "NO_RESULT", "UNKNOWN_KEY_TYPE", "code")

    rule = keeper.call("setFormatRule", country="BE", keyType="IDENTITY_CARD",
                       rule={"minLength": 12, "maxLength": 12, "pattern": "[0-9]{12}"})
    expect(rule.status, "OK")
    assert rule.rule.pattern == "[0-9]{12}"
    bad = keeper.call("setFormatRule", country="BE", keyType="IDENTITY_CARD",
                      rule={"minLength": 9, "maxLength": 3})
    expect(bad.status, "NO_RESULT", "INVALID_FORMAT_RULE")
    off_format = writer.call("createLink", ssin="85073003328", country="BE",
                             keyType="IDENTITY_CARD", value="59-1234567-89")
    expect(off_format.status, "NO_RESULT", "INVALID_FOREIGN_KEY", "value")
    listed = writer.call("listFormatRules")
    assert [(r.country, r.keyType) for r in listed.formatRule] == [("BE", "IDENTITY_CARD")]
    removed = keeper.call("setFormatRule", country="BE", keyType="IDENTITY_CARD")
    expect(removed.status, "OK")
    assert removed.rule is None

    deleted = keeper.call("deleteLink", id=link.id, reason="entered by mistake")
    expect(deleted.status, "OK")
    assert deleted.id == link.id
    gone = keeper.call("deleteLink", id=link.id, reason="again")
    expect(gone.status, "NO_RESULT", "LINK_NOT_FOUND")
    history = keeper.call("getLinkHistory", id=link.id)
    assert history.event[-1].action == "delete_link" and history.event[-1].reason

    # SOAP 1.2 answers as SOAP 1.1 does.
    created = writer.call("createLink", ssin="75060898009", country="DE",
                          keyType="DRIVING_LICENCE", value="B072RRE2I55")
    same = writer12.call("createLink", ssin="75060898009", country="DE",
                         keyType="DRIVING_LICENCE", value="B072RRE2I55")
    expect(same.status, "NO_RESULT", "LINK_EXISTS")
    assert same.status.information[0].fieldValue == str(created.link.id)
    r11 = writer.call("searchLinksBySsin", ssin="75060898009")
    r12 = writer12.call("searchLinksBySsin", ssin="75060898009")
    strip = lambda r: (zeep.helpers.serialize_object(r.status),
                       [zeep.helpers.serialize_object(l) for l in r.link])
    assert strip(r11) == strip(r12), (strip(r11), strip(r12))
    f11 = writer.fault("deleteLink", id=1, reason="x")
    f12 = writer12.fault("deleteLink", id=1, reason="x")
    assert reason(f11) == reason(f12) == "PERMISSION_DENIED"
    assert writer12.history.last_received["http_headers"]["Content-Type"].startswith(
        "application/soap+xml")

    # Hostile requests: faults, nothing changed.
    before = zeep.helpers.serialize_object(writer.call("searchLinksBySsin", ssin="75060898009").link)
    url = f"http://{http}/soap/LinkRegister"
    headers = {"Content-Type": "text/xml; charset=utf-8", "Authorization": "Bearer dev-keeper"}
    envelope = ('<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
                f'xmlns:lr="{NS}"><s:Body>%s</s:Body></s:Envelope>')
    hostile = [
        '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        + envelope % "<lr:deleteLinkRequest>&e;</lr:deleteLinkRequest>",
        envelope % '<x:deleteLinkRequest xmlns:x="urn:other"/>',
        envelope % "<lr:dropRegisterRequest/>",
        envelope % "<lr:deleteLinkRequest><lr:id>1</lr:id></lr:deleteLinkRequest>",
        "<not-xml",
        b"\xff\xfe<s:Envelope/>",
        envelope % ("<lr:x>" * 64 + "</lr:x>" * 64),
    ]
    for body in hostile:
        reply = requests.post(url, data=body, headers=headers, timeout=10)
        assert reply.status_code in (400, 500), reply.status_code
        assert b"Fault>" in reply.content and b"reasonCode" in reply.content, reply.content
        assert b"root:" not in reply.content
    after = zeep.helpers.serialize_object(writer.call("searchLinksBySsin", ssin="75060898009").link)
    assert before == after


def main():
    binary_missing = not os.path.exists(BINARY)
    if binary_missing:
        print(f"{BINARY} is missing: build it first (make unit)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as data:
        node, http = start_node(data)
        try:
            deadline = time.time() + 60
            while True:
                try:
                    if requests.get(f"http://{http}/soap/LinkRegister?wsdl", timeout=2).ok:
                        break
                except requests.ConnectionError:
                    pass
                if time.time() > deadline:
                    raise AssertionError("the node never served its WSDL")
                time.sleep(0.2)
            schema = xmlschema.XMLSchema(f"http://{http}/soap/LinkRegister?xsd")
            writer = Session(http, "dev-writer", schema)
            keeper = Session(http, "dev-keeper", schema)
            writer12 = Session(http, "dev-writer", schema, port="LinkRegisterSoap12")
            tests(writer, keeper, writer12, http)
        except Exception:
            traceback.print_exc()
            return 1
        finally:
            node.terminate()
            node.wait(timeout=30)
    print("soap_test: zeep called every operation; replies valid against the XSD")
    return 0


if __name__ == "__main__":
    sys.exit(main())
