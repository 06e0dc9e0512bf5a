"""Identity use cases, by concern.

- ``directory``: tenants, app registrations, users, Defender RBAC roles and user groups (administration).
- ``signing_keys``: the token authority's signing keys.
- ``grants``: the token endpoint's grants (``TokenService``).
- ``principals``: who a verified token speaks for (``PrincipalResolver``, ``TtlCache``).
- ``demo``: the demo identities.

The names are re-exported here for callers that use several concerns.
"""

from bulwark.service.identity.demo import DEMO_FULL_APP, DEMO_READER_APP, DemoUser, seed_demo_identities
from bulwark.service.identity.directory import (
    APPLICATION_PERMISSIONS,
    APPLICATION_ROLES,
    DELEGATED_PERMISSIONS,
    Capability,
    IdentityError,
    NewCredential,
    assign_to_user_group,
    create_application,
    create_role,
    create_tenant,
    create_user,
    create_user_group,
    grant_application_permissions,
    link_external_user,
    new_password,
    reset_application_secret,
    reset_user_password,
    set_application_enabled,
    set_user_enabled,
)
from bulwark.service.identity.grants import (
    DEFENDER_SCOPES,
    OIDC_SCOPES,
    SIGN_IN_FAILED_AUDIT_ACTION,
    TokenRequest,
    TokenRequestError,
    TokenService,
)
from bulwark.service.identity.principals import PrincipalResolver, TtlCache
from bulwark.service.identity.signing_keys import (
    ensure_signing_key,
    load_signing_keys,
    recorded_issuer_base_url,
    retire_signing_key,
    rotate_signing_key,
    settle_issuer_base_url,
    signing_keys_loader,
)

__all__ = [
    "APPLICATION_PERMISSIONS",
    "APPLICATION_ROLES",
    "DEFENDER_SCOPES",
    "DELEGATED_PERMISSIONS",
    "DEMO_FULL_APP",
    "DEMO_READER_APP",
    "OIDC_SCOPES",
    "SIGN_IN_FAILED_AUDIT_ACTION",
    "Capability",
    "DemoUser",
    "IdentityError",
    "NewCredential",
    "PrincipalResolver",
    "TokenRequest",
    "TokenRequestError",
    "TokenService",
    "TtlCache",
    "assign_to_user_group",
    "create_application",
    "create_role",
    "create_tenant",
    "create_user",
    "create_user_group",
    "ensure_signing_key",
    "grant_application_permissions",
    "link_external_user",
    "load_signing_keys",
    "new_password",
    "recorded_issuer_base_url",
    "reset_application_secret",
    "reset_user_password",
    "retire_signing_key",
    "rotate_signing_key",
    "seed_demo_identities",
    "set_application_enabled",
    "set_user_enabled",
    "settle_issuer_base_url",
    "signing_keys_loader",
]
