"""Statistics of a mask M (bool [..., n, n], True = may attend) and the universal-approximation checks.

Sparsity is the percentage of entries masked out (the reference code printed the density under
that name). The checks follow docs/paper.md §3 (Yun et al. 2020 with self-loops replaced by "no
self-loop"): (1) every query attends to at least one other token, (2) a Hamiltonian path exists
through the allowed edges, (3) every token reaches every other within L layers. For (2) and (3)
the graph of one layer is the union of its heads, with an edge j → i when query i may attend to
key j (information flows from j to i); the mask's layers repeat when the model has more.
"""

import warnings

import torch

from sparsebert_cli import runs


def sparsity(mask: torch.Tensor) -> float:
    """Percentage of entries masked out, over all layers and heads."""
    return 100.0 * (1.0 - mask.float().mean().item())


def sparsity_metrics(mask: torch.Tensor | None) -> dict[str, float]:
    """`mask/sparsity` of a run's mask (0 for dense: no mask) and the n it was measured at
    (`mask/seq_len`; a pattern's sparsity changes with n)."""
    if mask is None:
        return {runs.MASK_SPARSITY: 0.0}
    return {runs.MASK_SPARSITY: sparsity(mask), runs.MASK_SEQ_LEN: mask.shape[-1]}


def sparsity_per_layer(mask: torch.Tensor) -> list[float]:
    """Sparsity of each layer of M [L, H, n, n], in percent."""
    return [sparsity(layer) for layer in mask]


def sparsity_per_head(mask: torch.Tensor) -> list[list[float]]:
    """Sparsity of each head of each layer of M [L, H, n, n], in percent: [L][H]."""
    return [[sparsity(head) for head in layer] for layer in mask]


def row_density(mask: torch.Tensor) -> dict[str, float]:
    """Percentage of keys each query may attend to: min, mean and max over all query rows."""
    per_row = 100.0 * mask.float().mean(dim=-1)
    return {
        "min": per_row.min().item(),
        "mean": per_row.mean().item(),
        "max": per_row.max().item(),
    }


def rows_without_other_key(mask: torch.Tensor) -> int:
    """How many query rows (over all layers and heads) attend to no token other than themselves."""
    n = mask.shape[-1]
    others = mask & ~torch.eye(n, dtype=torch.bool)
    return int((~others.any(dim=-1)).sum().item())


def _layer_graphs(mask: torch.Tensor) -> torch.Tensor:
    """Union over heads, without self-loops: bool [L, n, n], [l, i, j] = edge j → i."""
    mask = mask.reshape(-1, *mask.shape[-3:])  # [L, H, n, n]
    n = mask.shape[-1]
    return mask.any(dim=1) & ~torch.eye(n, dtype=torch.bool)


def _follows(graph: torch.Tensor, order: list[int]) -> bool:
    """Whether each token of `order` attends to the one before it."""
    return all(bool(graph[order[k], order[k - 1]]) for k in range(1, len(order)))


def hamiltonian_path(mask: torch.Tensor, budget: int = 20_000) -> bool | None:
    """Whether some order of all n tokens has each token attending to its predecessor.

    Tries the natural orders 0…n−1 and n−1…0, rules out graphs with more than one token that no
    other token feeds (or that feeds no other), then searches depth-first (Warnsdorff's rule:
    fewest onward edges first). The problem is NP-complete in general: None means the search
    spent `budget` steps without deciding.
    """
    graph = _layer_graphs(mask).any(dim=0)  # [n, n], [i, j] = edge j → i
    n = graph.shape[-1]
    natural = list(range(n))
    if _follows(graph, natural) or _follows(graph, natural[::-1]):
        return True
    fed = graph.any(dim=1)  # token i attends to someone
    feeds = graph.any(dim=0)  # token j is attended by someone
    if int((~fed).sum()) > 1 or int((~feeds).sum()) > 1:
        return False
    successors = [graph[:, j].nonzero().flatten().tolist() for j in range(n)]
    predecessors = [graph[i].nonzero().flatten().tolist() for i in range(n)]
    onward = [len(s) for s in successors]  # unvisited successors of each token
    inward = [len(p) for p in predecessors]  # unvisited predecessors of each token
    visited = [False] * n

    def visit(node: int, on: bool) -> None:
        visited[node] = on
        for p in predecessors[node]:
            onward[p] += -1 if on else 1
        for s in successors[node]:
            inward[s] += -1 if on else 1

    def ranked(node: int) -> list[int]:
        return sorted((s for s in successors[node] if not visited[s]), key=onward.__getitem__)

    def dead_end(node: int) -> bool:
        """Two unvisited tokens with no onward edge (only the last may lack one), or one that
        no unvisited token feeds and the current end `node` does not feed either."""
        unvisited = [v for v in range(n) if not visited[v]]
        stuck = sum(onward[v] == 0 for v in unvisited)
        orphans = [v for v in unvisited if inward[v] == 0]
        return stuck > 1 or len(orphans) > 1 or any(not graph[v, node] for v in orphans)

    steps = 0
    for start in [int(i) for i in (~fed).nonzero().flatten()] or natural:
        path = [start]
        visit(start, True)
        stack = [iter(ranked(start))]
        while stack:
            steps += 1
            if steps > budget:
                return None
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                visit(path.pop(), False)
                continue
            path.append(nxt)
            visit(nxt, True)
            if len(path) == n:
                return True
            stack.append(iter([] if dead_end(nxt) else ranked(nxt)))
    return False


# Below this density a layer's graph multiplies as a sparse (CSR) matrix: at n = 4096 one
# product took 0.15 s for a window of half-width 8 against 1.5 s dense, 0.5 s at 3 % random
# entries, and was slower from about 10 % (2 CPU cores).
SPARSE_HOP_DENSITY = 0.05


def _matrix(hop: torch.Tensor) -> torch.Tensor:
    """`hop` as the cheapest left operand of a product: CSR when sparse enough."""
    if hop.count_nonzero() >= SPARSE_HOP_DENSITY * hop.numel():
        return hop
    with warnings.catch_warnings():  # CSR support is "beta" to torch; products are exact
        warnings.simplefilter("ignore", UserWarning)
        return hop.to_sparse_csr()


def reach_layers(mask: torch.Tensor, limit: int | None = None) -> int | None:
    """Fewest layers after which every token's output depends on every token; None if never, or
    not within `limit` layers (each layer is an n × n matrix product: a band at n = 4096 would
    need hundreds).

    One layer lets token i gather from itself (residual) and from the keys it attends to; the
    mask's layers repeat in order.
    """
    graphs = _layer_graphs(mask)
    n = graphs.shape[-1]
    eye = torch.eye(n, dtype=torch.bool)
    hops = [_matrix((graph | eye).float()) for graph in graphs]
    depends = eye  # [i, j]: token i depends on token j
    stalled = 0
    most = n * len(graphs) if limit is None else min(limit, n * len(graphs))
    for step in range(1, most + 1):
        grown = (hops[(step - 1) % len(hops)] @ depends.float()) > 0
        if bool(grown.all()):
            return step
        stalled = stalled + 1 if torch.equal(grown, depends) else 0
        if stalled >= len(graphs):
            return None
        depends = grown
    return None


def connectivity(mask: torch.Tensor, layers: int) -> dict:
    """The three universal-approximation conditions for a model with `layers` layers."""
    steps = reach_layers(mask, limit=layers)
    return {
        "attends_other": rows_without_other_key(mask) == 0,
        "hamiltonian_path": hamiltonian_path(mask),
        "reach_layers": steps,
        "reaches_all_within_layers": steps is not None,
    }
