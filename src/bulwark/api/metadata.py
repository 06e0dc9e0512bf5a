"""The OData service document ``/api/$metadata``: a CSDL description of the entities the API returns.

``@odata.context`` links point here (``.../api/$metadata#Machines/$entity``). The document is built
from the same entity descriptions that the OData query layer uses, so the names, order and types of
the properties it declares are those the API writes; it is built once and served from memory.
"""

from __future__ import annotations

from xml.etree import ElementTree as ET

from fastapi import APIRouter, Request
from starlette.responses import Response

from bulwark.odata import MACHINE_ACTION_SPEC, MACHINE_SPEC, EntitySpec, PropertyType

NAMESPACE = "microsoft.windowsDefenderATP.api"
CONTAINER = "DefenderApiContainer"
# Entity set name (the name in @odata.context) -> its entity description.
ENTITY_SETS: dict[str, EntitySpec] = {"Machines": MACHINE_SPEC, "MachineActions": MACHINE_ACTION_SPEC}

_EDM_TYPES = {
    PropertyType.STRING: "Edm.String",
    PropertyType.INT: "Edm.Int64",
    PropertyType.DATETIME: "Edm.DateTimeOffset",
    PropertyType.BOOL: "Edm.Boolean",
    PropertyType.STRING_COLLECTION: "Collection(Edm.String)",
}
# Properties whose type the query layer knows only as "int" or "complex": their exact shape.
_EXACT_TYPES = {
    ("MachineAction", "errorHResult"): "Edm.Int32",
    ("MachineAction", "relatedFileInfo"): f"{NAMESPACE}.RelatedFileInfo",
    ("MachineAction", "commands"): "Collection(Edm.String)",
    ("MachineAction", "troubleshootInfo"): "Edm.String",
    ("Machine", "ipAddresses"): f"Collection({NAMESPACE}.IpAddress)",
}
_COMPLEX_TYPES = {
    "IpAddress": ("ipAddress", "macAddress", "type", "operationalStatus"),
    "RelatedFileInfo": ("fileIdentifier", "fileIdentifierType"),
}
# Properties the API always writes with a value.
_NOT_NULL = {"id"}


def _enum_type_name(entity: EntitySpec, prop: str) -> str:
    return f"{entity.name}{prop[0].upper()}{prop[1:]}"


def build_csdl() -> bytes:
    """The CSDL (OData 4.0, XML) document for Bulwark's entities."""
    edmx = ET.Element("edmx:Edmx", {"Version": "4.0", "xmlns:edmx": "http://docs.oasis-open.org/odata/ns/edmx"})
    services = ET.SubElement(edmx, "edmx:DataServices")
    schema = ET.SubElement(services, "Schema", {"Namespace": NAMESPACE, "xmlns": "http://docs.oasis-open.org/odata/ns/edm"})
    for entity in ENTITY_SETS.values():
        for prop, spec in entity.properties.items():
            if spec.type is PropertyType.ENUM:
                enum = ET.SubElement(schema, "EnumType", {"Name": _enum_type_name(entity, prop)})
                for value, member in enumerate(spec.enum_values):
                    ET.SubElement(enum, "Member", {"Name": member, "Value": str(value)})
    for name, members in _COMPLEX_TYPES.items():
        complex_type = ET.SubElement(schema, "ComplexType", {"Name": name})
        for member in members:
            ET.SubElement(complex_type, "Property", {"Name": member, "Type": "Edm.String"})
    for entity in ENTITY_SETS.values():
        entity_type = ET.SubElement(schema, "EntityType", {"Name": entity.name})
        key = ET.SubElement(entity_type, "Key")
        ET.SubElement(key, "PropertyRef", {"Name": "id"})
        for prop, spec in entity.properties.items():
            if spec.type is PropertyType.ENUM:
                edm_type = f"{NAMESPACE}.{_enum_type_name(entity, prop)}"
            else:
                edm_type = _EXACT_TYPES.get((entity.name, prop)) or _EDM_TYPES[spec.type]
            attributes = {"Name": prop, "Type": edm_type}
            if prop in _NOT_NULL:
                attributes["Nullable"] = "false"
            ET.SubElement(entity_type, "Property", attributes)
    container = ET.SubElement(schema, "EntityContainer", {"Name": CONTAINER})
    for set_name, entity in ENTITY_SETS.items():
        ET.SubElement(container, "EntitySet", {"Name": set_name, "EntityType": f"{NAMESPACE}.{entity.name}"})
    ET.indent(edmx)
    return ET.tostring(edmx, encoding="utf-8", xml_declaration=True)


_DOCUMENT = build_csdl()
_HEADERS = {"OData-Version": "4.0", "Cache-Control": "public, max-age=3600"}

router = APIRouter()


@router.get("/$metadata", include_in_schema=False)
async def service_metadata(request: Request) -> Response:
    """The CSDL document (public, like the OpenAPI document: it describes types, never data)."""
    return Response(_DOCUMENT, media_type="application/xml", headers=_HEADERS)
