"""Builds the request envelope that zeep, a standard SOAP client, makes for an operation from
the service's WSDL, so a test can compare it with the gateway's.

Reads one JSON object on stdin: {"wsdl": URL, "operation": NAME, "params": {...},
"ours": "<the gateway's envelope>"}. Prints {"zeep": [...], "ours": [...]}: each document's
elements in order as [namespace, local name, text], the infoset both should share whatever
prefixes they chose.
"""

import json
import sys

import zeep
from lxml import etree


def infoset(root):
    out = []
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        q = etree.QName(el)
        out.append([q.namespace or "", q.localname, el.text or ""])
    return out


def main():
    job = json.load(sys.stdin)
    client = zeep.Client(job["wsdl"])
    envelope = client.create_message(client.service, job["operation"], **job["params"])
    ours = etree.fromstring(job["ours"].encode("utf-8"))
    json.dump({"zeep": infoset(envelope), "ours": infoset(ours)}, sys.stdout)


if __name__ == "__main__":
    main()
