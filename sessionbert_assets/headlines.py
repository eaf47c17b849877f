"""The one line each evaluation asset opens with: what served, against the best baseline and the ceiling
or oracle, per head or per number of seen days, in words and numbers (three decimals)."""

from __future__ import annotations

from sessionbert_core.evaluation.choice import PEERS

HEADS = ("service", "page")
BASELINES = ("popularity", "markov", "random")


def _best(figures: dict[str, float], among: tuple[str, ...]) -> tuple[str, float] | None:
    present = {m: v for m, v in figures.items() if m in among}
    return max(present.items(), key=lambda item: item[1]) if present else None


def next_activity(evaluation: dict) -> str:
    """Two short lines per head (the UI's value column is about 65 characters wide at 1,600 px):

        service: sessionbert 0.686 serves, ceiling 0.716
          best baseline markov 0.555
        page: ...
        (test accuracy)

    Without a served method (the baselines alone) every baseline is named on the head's line."""
    lines = []
    for head in HEADS:
        accuracy = {m: f["accuracy"] for m, f in evaluation.get(head, {}).items()}
        if not accuracy:
            continue
        served = evaluation.get("served", {}).get(head)
        words = [f"{served} {accuracy[served]:.3f} serves"] if served in accuracy else [
            f"{m} {accuracy[m]:.3f}" for m in BASELINES if m in accuracy]
        if "ceiling" in accuracy:
            words.append(f"ceiling {accuracy['ceiling']:.3f}")
        lines.append(f"{head}: " + ", ".join(words))
        best = _best(accuracy, BASELINES)
        if best and served in accuracy:
            lines.append(f"  best baseline {best[0]} {best[1]:.3f}")
        closest = _best(accuracy, PEERS)
        if closest and served in accuracy:
            alone = f", sessionbert alone {accuracy['sessionbert']:.3f}" if served != "sessionbert" and \
                "sessionbert" in accuracy else ""
            lines.append(f"  best peer {closest[0]} {closest[1]:.3f}{alone}")
    return "\n".join([*lines, "(test accuracy)"]) if lines else "no sessions to evaluate"


def hit_at_k(evaluation: dict) -> str:
    """Short lines per number of seen days D (Hit@5):

        D=6, 51 users: sessionbert 0.598 serves, oracle 0.931
          best baseline popularity 0.714
          best sessionbert_persona 0.884
        D=10, ...
        (Hit@5)
    """
    served, lines = evaluation.get("served_ranker"), []
    for d, entry in evaluation.get("seen_days", {}).items():
        hit5 = {m: f["hit@5"] for m, f in entry.items() if isinstance(f, dict)}
        if not hit5:
            continue
        words = [f"{served} {hit5[served]:.3f} serves"] if served in hit5 else []
        if "oracle" in hit5:
            words.append(f"oracle {hit5['oracle']:.3f}")
        lines.append(f"D={d}, {entry.get('n_users', 0):,} users: " + ", ".join(words))
        baseline = _best(hit5, BASELINES)
        others = [f"best baseline {baseline[0]} {baseline[1]:.3f}"] if baseline else []
        best = _best(hit5, tuple(m for m in hit5 if m != "oracle"))  # a peer (EASE, item-kNN) among them
        if best and best[0] not in (served, baseline and baseline[0]):
            others.append(f"best {best[0]} {best[1]:.3f}")
        lines += [f"  {words}" for words in others]
    return "\n".join([*lines, "(Hit@5)"]) if lines else "no user adopts a service after the seen days"


def personas(evaluation: dict) -> str:
    """`k = 5 in the sessionbert space; ARI 0.892, accuracy 0.984 (best other: tfidf ARI 0.869)`."""
    words = f"k = {evaluation['k']} in the {evaluation.get('representation', 'sessionbert')} space"
    if "ari" in evaluation:
        words += f"; ARI {evaluation['ari']:.3f}, accuracy {evaluation['accuracy']:.3f}"
        others = {r: f["ari"] for r, f in evaluation.get("by_representation", {}).items()
                  if r != evaluation.get("representation") and "ari" in f}
        if others:
            name, ari = max(others.items(), key=lambda item: item[1])
            words += f" (best other: {name} ARI {ari:.3f})"
    return words


def cluster_sweep(result: dict) -> str:
    """`k = 5 (highest silhouette 0.412), the sessionbert space: <why>`."""
    curve = result.get("silhouette", {}).get(result.get("representation", "sessionbert"), {})
    at_k = curve.get(str(result["k"]), curve.get(result["k"]))
    silhouette = f", silhouette {at_k:.3f}" if isinstance(at_k, float) else ""
    return (f"k = {result['k']} ({result.get('k_rule', 'silhouette')}{silhouette}), the "
            f"{result.get('representation', 'sessionbert')} space: {result.get('representation_reason', '')}")
