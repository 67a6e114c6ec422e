"""Mirror policies (SPEC §6): the one document model, parsing, and validation.

:class:`MirrorPolicy` is the document users give to ``gns mirror apply -f`` and, unchanged,
the ``MirrorPolicy`` custom resource (``gns.io/v1alpha1``) the Kubernetes controller reads;
it is also exactly what is stored at ``/gns/v1/policies/<name>`` (:meth:`MirrorPolicy.to_json`).
On the wire names are camelCase (``promoteTo``, ``maxLag``) and unknown fields are refused
at every level. Durations are Go-style strings (``30s``, ``5m``, ``1h30m``, ``500ms``) or a
plain number of seconds (``after: 30``, kept as ``30s``): the model keeps the text as written
and exposes the value as :attr:`Duration.seconds`. ``interval`` and ``failover.after`` must
be longer than zero.

Validation happens in two stages, and both report *every* problem, never just the first:

* structure (pydantic): types, unknown fields, durations, names, each target's URI;
* meaning (:func:`validate_policy`): cross-field rules (interval required for ``mode: interval``,
  no zero ``interval`` or ``failover.after``,
  duplicate or overlapping targets, ``sync`` only to clusters, priority entries that are not
  targets, ``promoteTo``) and the checks against the namespace (unknown volume or cluster, a
  target equal to the volume's owner).

:func:`load_and_validate` runs both and raises one :class:`~namespace.errors.InvalidInput`
listing everything; when the structure is broken it still runs the meaning checks on the
parts that are well formed, so a user fixes a document in one round trip. This module does
no I/O and never imports ``federation``.

The parts: :mod:`.duration` (the ``Duration`` field type), :mod:`.model` (the document and
the stored policies), :mod:`.document` (YAML/JSON text to a policy), :mod:`.validation`.
"""
from mirroring.policy.document import load_and_validate, parse_document, parse_policy
from mirroring.policy.duration import Duration, seconds_text
from mirroring.policy.model import (
    API_VERSION,
    KIND,
    MODES,
    Failover,
    Metadata,
    MirrorPolicy,
    Mode,
    PolicySpec,
    Target,
    stored_policies,
    stored_policy,
)
from mirroring.policy.validation import validate_document, validate_policy
from namespace.durations import parse_duration

__all__ = [
    "API_VERSION",
    "KIND",
    "MODES",
    "Duration",
    "Failover",
    "Metadata",
    "MirrorPolicy",
    "Mode",
    "PolicySpec",
    "Target",
    "load_and_validate",
    "parse_document",
    "parse_duration",
    "parse_policy",
    "seconds_text",
    "stored_policies",
    "stored_policy",
    "validate_document",
    "validate_policy",
]
