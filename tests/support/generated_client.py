"""Run by tests/integration/test_third_party_clients.py with the interpreter of openapi-python-client's virtualenv
and the generated package `uaip_hub_client` on its path: what a user of that client writes first. Prints one
JSON line. Arguments: the hub's base URL, a client id, its secret and a device type to list."""

import json
import sys

from uaip_hub_client import AuthenticatedClient, Client
from uaip_hub_client.api.auth import token
from uaip_hub_client.api.devices import list_devices
from uaip_hub_client.models import TokenRequest, TokenRequestGrantType, TokenResponse

hub, client_id, client_secret, device_type = sys.argv[1:5]
request = TokenRequest(grant_type=TokenRequestGrantType("client_credentials"), client_id=client_id,
                       client_secret=client_secret, scope="device:read")
issued = token.sync(client=Client(base_url=hub), body=request)
assert isinstance(issued, TokenResponse), issued
with AuthenticatedClient(base_url=hub, token=issued.access_token) as api:
    page = list_devices.sync(client=api, type_=device_type)
print(json.dumps({"scope": issued.scope, "total": page.total, "devices": [d.device_id for d in page.devices]}))
