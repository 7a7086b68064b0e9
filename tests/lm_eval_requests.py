"""lm-eval requests built the same way on lm-eval 0.4.x and 0.5 (0.5 made ``task_name`` and ``doc_id``
fields of their own; 0.4 unpacks them from ``metadata``, which 0.5 still accepts)."""

from lm_eval.api.instance import Instance


def request(kind: str, *args, doc_id: int = 0, task: str = "unit") -> Instance:
    return Instance(request_type=kind, doc={}, arguments=args, idx=0, task_name=task, doc_id=doc_id,
                    metadata=(task, doc_id, 1))
