from __future__ import annotations

from typing import Optional

from lit_imgcls.recipe import Recipe


def fit(recipe: Recipe, allow_any_class: bool = False, overwrite: bool = False, log_file: Optional[str] = None) -> None:
    """Train a network from a recipe; every recipe key is also a flag that overrides it.

    Example: lit-imgcls fit --recipe recipes/mnist.yaml --lr .1 --lr-factor .9 --lr-factor-epoch .5
    Checkpoints go to MODEL_PREFIX-NNNN.ckpt after each epoch; --load-epoch N resumes from one exactly.

    Args:
        recipe: the training recipe (--recipe FILE, then flags).
        allow_any_class: let the recipe's callbacks name any class by its dotted path, importing its module (which
            runs that module's code). Without it a recipe names only registered plugins (`lit-imgcls list
            callbacks`) and the paths they point to. A command-line switch only: a recipe file cannot set it.
        overwrite: start from scratch although MODEL_PREFIX holds another run's checkpoints, removing them first.
            Without it such a start is refused (add --resume auto to continue that run instead). A command-line
            switch only.
        log_file: also append every line printed on stdout (the Speedometer lines, the final line) to this file,
            as MXNet's --log-file did; stdout is unchanged.
    """
    from lit_imgcls.logfile import tee_stdout

    with tee_stdout(log_file):
        _fit(recipe, allow_any_class, overwrite)


def _fit(recipe: Recipe, allow_any_class: bool, overwrite: bool) -> None:
    from lit_imgcls.engine import fit as run_fit

    result = run_fit(recipe, allow_any_class=allow_any_class, overwrite=overwrite)
    if not result.reports:  # synchronous workers share one result; rank 0 reports it
        return
    if result.nothing_to_train:
        print(f"final: {result.nothing_to_train}", flush=True)
        return
    # What happened, and only that: the epochs this run trained, and that it ended before num_epochs if it did.
    first, last = result.first_epoch + 1, result.epochs_done
    span = f"epoch {last}" if first == last else f"epochs {first}-{last}"
    val = result.metrics.get("val/acc")
    # validation scored the moving average, not the last step's weights; and/or each image with its mirror
    notes = [n for n, on in (("EMA weights", recipe.ema_decay), ("test-time flip averaging", recipe.tta_flip)) if on]
    ema = f" ({', '.join(notes)})" if notes else ""
    parts = [f"val top-1 accuracy {val:.4f}{ema}" if val is not None else "no validation set",
             f"trained {span} of {result.num_epochs} ({result.steps} steps)"
             + ("" if last >= result.num_epochs else ", stopped early by a callback")]
    if recipe.top_k > 1 and f"val/top{recipe.top_k}" in result.metrics:
        parts.append(f"top-{recipe.top_k} {result.metrics[f'val/top{recipe.top_k}']:.4f}")
    parts.append(f"training {result.train_seconds:.1f} s ({result.samples_per_sec:.0f} samples/s last epoch)")
    parts.append(f"total {result.wall_seconds:.1f} s")
    parts.append(f"checkpoint {result.checkpoint}" if result.checkpoint else "no checkpoint (set model_prefix)")
    parts.append(f"logs {result.run_dir}")
    print("final: " + " | ".join(parts), flush=True)
