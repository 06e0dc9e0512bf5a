"""The entity sets Bulwark lists over OData, described as the query layer sees them.

What can be filtered follows the MDE contract; what can be filtered can also be sorted (except collections).
A new queryable property is added here (and, if stored, to the column map in ``bulwark.store.queries``).
"""

from __future__ import annotations

from bulwark.odata.parser import EntitySpec, PropertySpec, PropertyType

__all__ = ["MACHINE_ACTION_SPEC", "MACHINE_SPEC"]


def _string(filterable: bool = False) -> PropertySpec:
    return PropertySpec(PropertyType.STRING, filterable=filterable, sortable=filterable)


def _datetime(filterable: bool = False) -> PropertySpec:
    return PropertySpec(PropertyType.DATETIME, filterable=filterable, sortable=filterable)


def _int(filterable: bool = False) -> PropertySpec:
    return PropertySpec(PropertyType.INT, filterable=filterable, sortable=filterable)


def _enum(*values: str, filterable: bool = False) -> PropertySpec:
    return PropertySpec(PropertyType.ENUM, filterable=filterable, sortable=filterable, enum_values=values)


_BOOL = PropertySpec(PropertyType.BOOL)
_COMPLEX = PropertySpec(PropertyType.COMPLEX)

MACHINE_ACTION_SPEC = EntitySpec(
    "MachineAction",
    {
        "id": _string(filterable=True),
        "type": _enum(
            "Offboard",
            "Isolate",
            "Unisolate",
            "RunAntiVirusScan",
            "CollectInvestigationPackage",
            "StopAndQuarantineFile",
            "RestrictCodeExecution",
            "UnrestrictCodeExecution",
            "LiveResponse",
            filterable=True,
        ),
        "title": _string(),
        "requestor": _string(filterable=True),
        "requestorComment": _string(),
        "status": _enum("Pending", "InProgress", "Succeeded", "Failed", "TimeOut", "Cancelled", filterable=True),
        "machineId": _string(filterable=True),
        "computerDnsName": _string(),
        "creationDateTimeUtc": _datetime(filterable=True),
        "lastUpdateDateTimeUtc": _datetime(),
        "cancellationRequestor": _string(),
        "cancellationComment": _string(),
        "cancellationDateTimeUtc": _datetime(),
        "errorHResult": _int(),
        "scope": _string(),
        "externalId": _string(),
        "requestSource": _string(),
        "relatedFileInfo": _COMPLEX,
        "commands": _COMPLEX,
        "troubleshootInfo": _COMPLEX,
    },
)

MACHINE_SPEC = EntitySpec(
    "Machine",
    {
        "id": _string(filterable=True),
        "computerDnsName": _string(filterable=True),
        "firstSeen": _datetime(),
        "lastSeen": _datetime(filterable=True),
        "osPlatform": _string(filterable=True),
        "osProcessor": _string(),
        "version": _string(filterable=True),
        "osBuild": _int(),
        "lastIpAddress": _string(filterable=True),
        "lastExternalIpAddress": _string(),
        "agentVersion": _string(),
        "healthStatus": _enum(
            "Active",
            "Inactive",
            "ImpairedCommunication",
            "NoSensorData",
            "NoSensorDataImpairedCommunication",
            "Unknown",
            filterable=True,
        ),
        "deviceValue": _enum("Normal", "Low", "High", filterable=True),
        "rbacGroupId": _int(filterable=True),
        "rbacGroupName": _string(),
        "riskScore": _enum("None", "Informational", "Low", "Medium", "High", filterable=True),
        "exposureLevel": _enum("None", "Low", "Medium", "High", filterable=True),
        "isAadJoined": _BOOL,
        "aadDeviceId": _string(filterable=True),
        "machineTags": PropertySpec(PropertyType.STRING_COLLECTION, filterable=True),
        "onboardingStatus": _enum("Onboarded", "CanBeOnboarded", "Unsupported", "InsufficientInfo", filterable=True),
        "osArchitecture": _string(),
        "ipAddresses": _COMPLEX,
        "managedBy": _string(),
        "managedByStatus": _string(),
        "isPotentialDuplication": _BOOL,
        "isExcluded": _BOOL,
    },
)
