"""The recipe: every key of a training run, flat like MXNet's flags (``lr_factor`` is ``--lr-factor``)."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass
import typing
from typing import Any, Literal, Optional

import yaml

from lit_imgcls.errors import UsageError
from lit_imgcls.schedules import SCHEDULES, keys_read, parse_epochs


@dataclass
class Recipe:
    """A training recipe; a YAML file of these keys, each also a command-line flag.

    Args:
        network: network name: lenet, mlp, inception-bn, inception-bn-small, a plugin's, or any timm model.
        num_layers: depth appended to a network name without digits, as MXNet's flag (resnet + 50 = resnet50).
        pretrained: local file with weights to start from (lit-imgcls checkpoint, timm or plain state_dict);
            tensors whose shapes differ (the classifier, for another class count) start fresh.
        freeze_backbone: fine-tuning: train only the classifier layer, keep every other weight as loaded.
        backbone_lr_mult: fine-tuning: the LR of every layer but the classifier is lr times this.
        dataset: dataset name from the registry (mnist, cifar10, folder, npz, wds, ffcv, or a plugin's).
        data_dir: folder holding the dataset's files (downloaded there when the dataset can download).
        data_url: base URL to download the dataset from, instead of the mirrors in its card.
        data_train: training data (a folder for the folder dataset).
        data_val: validation data.
        data_cache: local folder keeping sha256-checked copies of remote packed shards (s3://, http(s)://).
        image_shape: network input as "C,H,W"; default: the dataset's. With min_res/max_res, the evaluation input
            (validation, test, score, predict) only: training images are resized to the epoch's side.
        min_res: training image side in pixels at the start (FFCV's progressive resizing; the shorter side when
            image_shape is not square); default: image_shape's, i.e. off. Each training batch is resized on the
            training device (bilinear, antialiased) after it is normalised, on every data path; training below the
            evaluation side (min_res 160, max_res 192, image_shape 3,224,224) is FixRes's train/test discrepancy
            put to use (Touvron et al. 2019). The network must take any input size (global pooling: resnet,
            timm's); lenet and mlp cannot.
        max_res: training side from epoch end_ramp on (>= min_res); default: image_shape's.
        start_ramp: the last epoch (0-based) trained at min_res; needed when min_res and max_res differ.
        end_ramp: the first epoch trained at max_res (>= start_ramp); in between the side grows
            linearly, rounded to the nearest multiple of 32 px, as FFCV's (160 -> 192 over 65-76: 192 from
            epoch 71).
        rgb_mean: per-channel mean subtracted from the pixels, on MXNet's 0-255 scale, comma-separated like
            "123.68,116.779,103.939" (one value for all channels, or one per channel); default: the dataset's.
            Stored as mean / 255 in checkpoints, which predict and score apply.
        rgb_std: per-channel standard deviation the pixels are divided by, on the same 0-255 scale, like
            "58.393,57.12,57.375" ("1,1,1" is MXNet's default: no scaling); default: the dataset's.
        num_classes: the class count the data must have, as MXNet's flag: a check only (the classes are read
            from the data), a mismatch is an error.
        num_examples: training examples to use. In-memory datasets (mnist, cifar10, npz) train on the first N
            (quick trials); the others train on all their samples, and N must then be their count (MXNet's
            --num-examples describes the data). More than the data holds is an error. Default: all.
        data_nthreads: data-loading worker processes (in-memory datasets need none); FFCV: decoding threads, at
            most the cores. Default: 4, or this machine's cores shared among its training processes when fewer.
        batch_size: samples per batch on each device (MXNet: per worker); with accumulate_grad_batches N, per
            micro-batch (an optimizer step then takes N x batch_size samples on each device).
        accumulate_grad_batches: micro-batches of batch_size per optimizer step (gradient accumulation; 1 = off):
            the gradient of N x batch_size samples with the activation memory of batch_size. Steps count
            optimizer steps everywhere (LR schedule, Speedometer, step checkpoints).
        fused_steps: in-memory datasets: hand K batches to Lightning at once and take K optimizer steps on them,
            which spreads the framework's per-batch cost over K steps (same training, faster for small networks);
            single-worker runs only (data-parallel workers take one step per batch). Steps are counted in
            optimizer steps everywhere all the same (logs, metrics.csv, progress bar, checkpoints). A report or a
            checkpoint can only fall between two fused groups, so K is lowered to the largest number that divides
            disp_batches and save_every_steps (8 with disp_batches 100 runs as 4), with a note: speed only.
        num_epochs: passes over the training set.
        optimizer: sgd or adamw.
        lr: base learning rate.
        mom: momentum of SGD, beta1 of AdamW.
        nesterov: Nesterov momentum for SGD.
        wd: weight decay (not applied to biases and norm layers).
        label_smoothing: cross-entropy label smoothing in [0, 1).
        class_weights: per-class weights of the training loss, for imbalanced classes: "auto" (inverse class
            frequency of the training split, w_c = N / (K * n_c) for N images, K classes, n_c images of class c:
            they average 1 over the images) or a file of one weight per class by class name (JSON object, or
            NAME,WEIGHT lines; read as data). Works with label_smoothing, mixup and cutmix, on every dataset;
            validation loss stays unweighted. Default: unset, every class weighs 1.
        sampler: the training order: shuffle (each sample once per epoch, in an order fixed by seed and epoch) or
            balanced (samples drawn with replacement so that every class comes equally often; the epoch keeps
            its length, the draw is fixed by seed and epoch, so a resume is exact and every worker gets as many
            batches). balanced works on mnist, cifar10, npz, folder and ffcv; wds streams its shards and refuses
            it.
        clip_gradient: bound on the gradients before each optimizer step, as MXNet's --clip-gradient; 0 = off.
            clip_gradient_algorithm norm scales all gradients together to a total 2-norm of at most this; value
            clamps each gradient element to [-clip_gradient, clip_gradient].
        clip_gradient_algorithm: norm or value (how clip_gradient bounds the gradients).
        ema_decay: keep an exponential moving average of the weights, updated after every optimizer step
            (ema = decay * ema + (1 - decay) * weights), e.g. 0.999; 0 = off. Validation, the saved checkpoints
            and so predict, validate and score then use the EMA weights (their output says so).
        lr_schedule: constant, step, multistep, cosine, onecycle or linear (straight down to 0 at the last step;
            with warmup_epochs, FFCV's triangular schedule); default: step if lr_factor_epoch is set, multistep if
            lr_step_epochs is set, else constant.
        lr_factor: LR multiplier at each decay of step and multistep.
        lr_factor_epoch: epochs between two decays of step (fractions allowed, applied per iteration).
        lr_step_epochs: epochs of the decays of multistep, like "30,60".
        warmup_epochs: linear LR warm-up, in epochs (not with onecycle).
        onecycle_pct: fraction of the steps spent raising the LR in onecycle.
        top_k: also report top-k accuracy when > 1.
        tta_flip: test-time flip averaging in validation (fit, validate, test) and score: the class probabilities
            are the mean of the softmax of each image and of its horizontal mirror (twice the evaluation cost);
            their output says so. Needs images at least 2 pixels wide.
        gpus: CUDA devices like "0,1,3"; empty means CPU.
        num_processes: CPU worker processes on this machine (data parallel over gloo) when gpus is empty.
        kv_store: how workers combine gradients: local, device, local_allreduce_device, dist_sync,
            dist_device_sync, dist_async.
        dist_timeout: seconds a worker waits in a collective for the others before the run fails, naming the
            worker that is missing.
        precision: Lightning precision: 32-true, 16-mixed, bf16-mixed; MXNet's --dtype names mean float32: 32-true,
            float16: 16-mixed (fp16 compute, fp32 weights, as MXNet's multi-precision SGD), bfloat16: bf16-mixed.
        threads: CPU threads for compute; default: all cores.
        compile: fit compiles the network with torch.compile (its first steps wait for the compilation, tens of
            seconds on a CPU; docs/BENCHMARKS.md says what it gives); checkpoints are the same either way.
        channels_last: channels-last memory format for network and batches.
        seed: seed of initialisation and data order.
        disp_batches: log speed and training accuracy every N optimizer steps of an epoch.
        progress_bar: a progress bar when stdout is a terminal; in a log (a file, a pipe, CI, nohup) plain lines
            instead, no carriage returns: a short progress line after 30 s without a Speedometer line. false:
            the Speedometer's lines only.
        model_prefix: checkpoints go to PREFIX-0001.ckpt, ... and the recipe to PREFIX-recipe.yaml; a local path
            or a URL fsspec writes (s3://bucket/model/mnist; gs://, az:// with gcsfs, adlfs).
        save_period: save a checkpoint every N epochs (and after the last).
        save_every_steps: also save PREFIX-step-NNNNNNNN.ckpt every N optimizer steps of an epoch (NNNNNNNN: the
            global step; the newest two are kept), so a crash costs at most N steps; resuming from one continues
            the epoch's data order where it stopped.
        load_epoch: resume from PREFIX-NNNN.ckpt of that epoch: weights, optimizer, LR schedule, data order.
        resume: "auto": resume from the newest readable checkpoint under model_prefix (epoch, step or stop
            checkpoint; a damaged newer one is skipped with a warning), or start from scratch when none is saved
            yet; the same command line can simply be rerun after a crash or a pre-emption.
        run_dir: folder for logs and metrics (a numbered run folder is made inside).
        tensorboard: also write TensorBoard event files into the run folder (metrics.csv is always written).
        callbacks: extra Lightning callbacks, a list of {class_path: NAME_OR_PATH, init_args: {...}}: a name
            from `lit-imgcls list callbacks` (early_stopping, lr_monitor, swa) or the dotted path a registered
            plugin points to; any other class only when `fit`, `validate` or `test` is given --allow-any-class on
            the command line.
        augment: training augmentation, an ordered list of stages, like [{name: random_crop, pad: 4},
            {name: mirror}, {name: trivial_augment}] (`lit-imgcls list augmentations`; torchvision.transforms.v2
            does the work). Each image's random draws are fixed by (seed, epoch, image), so a resumed run and every
            data path give the same pixels. Unset: the dataset's own (cifar10: pad-4 crop and flip; folder and wds
            photos: random-resized crop and flip; others none); a list replaces it; [] turns it off. mixup and
            cutmix stages mix whole batches in the training step (with label_smoothing, on any batch size).
            MXNet's flags below add stages before the list's, in this order: rotate, shear, scale,
            random_resized_crop, random_crop, mirror, hsl, color_jitter, pca_noise.
        augment_device: run augment's per-image stages in the training step, on each batch after it reached the
            training device (uint8), instead of per image in the loader; kornia.augmentation draws every image's
            parameters, from (seed, global step), so a resumed run is exact. Faster on a GPU, and the way to give
            --dataset ffcv per-image stages. Images from files come in at the input size (the evaluation crop),
            and the stages run on that. Stages with a device form: random_crop, mirror, random_resized_crop,
            rotate, shear, scale, hsl, color_jitter, random_erasing, pca_noise; rand_augment, trivial_augment,
            auto_augment and plugin stages without one run only on the host and are refused.
        pad_size: MXNet's --pad-size: pixels of padding on each side before the random crop (adds random_crop).
        random_crop: MXNet's --random-crop 1: a random crop of the input size (adds random_crop).
        random_mirror: MXNet's --random-mirror 1: random horizontal flips (adds mirror).
        random_resized_crop: MXNet's --random-resized-crop 1: Inception-style random-resized crops (adds
            random_resized_crop; the area and aspect-ratio flags set its ranges).
        min_random_area: smallest share of the image a random-resized crop keeps (default 0.08).
        max_random_area: largest share (default 1).
        min_random_aspect_ratio: smallest width/height of a random-resized crop (default 3/4).
        max_random_aspect_ratio: largest width/height (default 4/3); alone, the range is [1 - it, 1 + it], as
            MXNet's.
        max_random_rotate_angle: random rotation by up to this many degrees (adds rotate).
        max_random_shear_ratio: random horizontal shear by up to this ratio, in [0, 1] (adds shear).
        min_random_scale: smallest random zoom factor (adds scale; default 1).
        max_random_scale: largest random zoom factor (adds scale; default 1).
        max_random_h: random hue change, on OpenCV's 0-180 hue circle (adds hsl).
        max_random_s: random saturation change, on the 0-255 scale (adds hsl).
        max_random_l: random lightness change, on the 0-255 scale (adds hsl).
        brightness: random brightness factor in [1 - b, 1 + b], b in [0, 1] (adds color_jitter).
        contrast: random contrast factor in [1 - c, 1 + c] (adds color_jitter).
        saturation: random saturation factor in [1 - s, 1 + s] (adds color_jitter).
        pca_noise: AlexNet's lighting noise with this standard deviation, in [0, 1] (adds pca_noise).
    """

    network: str = "lenet"
    num_layers: Optional[int] = None
    pretrained: Optional[str] = None
    freeze_backbone: bool = False
    backbone_lr_mult: float = 1.0
    dataset: str = "mnist"
    data_dir: Optional[str] = None
    data_url: Optional[str] = None
    data_train: Optional[str] = None
    data_val: Optional[str] = None
    data_cache: Optional[str] = None
    image_shape: Optional[str] = None
    min_res: Optional[int] = None
    max_res: Optional[int] = None
    start_ramp: Optional[int] = None
    end_ramp: Optional[int] = None
    rgb_mean: Optional[str] = None
    rgb_std: Optional[str] = None
    num_classes: Optional[int] = None
    num_examples: Optional[int] = None
    data_nthreads: Optional[int] = None
    batch_size: int = 128
    accumulate_grad_batches: int = 1
    fused_steps: int = 1
    num_epochs: int = 100
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.1
    mom: float = 0.9
    nesterov: bool = False
    wd: float = 0.0001
    label_smoothing: float = 0.0
    class_weights: Optional[str] = None
    sampler: Literal["shuffle", "balanced"] = "shuffle"
    clip_gradient: float = 0.0
    clip_gradient_algorithm: Literal["norm", "value"] = "norm"
    ema_decay: float = 0.0
    lr_schedule: Optional[Literal["constant", "step", "multistep", "cosine", "onecycle", "linear"]] = None
    lr_factor: float = 0.1
    lr_factor_epoch: Optional[float] = None
    lr_step_epochs: Optional[str] = None
    warmup_epochs: float = 0.0
    onecycle_pct: float = 0.25
    top_k: int = 0
    tta_flip: bool = False
    gpus: str = ""
    num_processes: int = 1
    kv_store: str = "device"
    dist_timeout: float = 600.0
    precision: str = "32-true"
    threads: Optional[int] = None
    compile: bool = False
    channels_last: bool = False
    seed: int = 0
    disp_batches: int = 20
    progress_bar: bool = True
    model_prefix: Optional[str] = None
    save_period: int = 1
    save_every_steps: Optional[int] = None
    load_epoch: Optional[int] = None
    resume: Optional[Literal["auto"]] = None
    run_dir: str = "runs"
    tensorboard: bool = False
    callbacks: Optional[list[dict[str, Any]]] = None
    augment: Optional[list[Any]] = None
    augment_device: bool = False
    pad_size: Optional[int] = None
    random_crop: Optional[int] = None
    random_mirror: Optional[int] = None
    random_resized_crop: Optional[int] = None
    min_random_area: Optional[float] = None
    max_random_area: Optional[float] = None
    min_random_aspect_ratio: Optional[float] = None
    max_random_aspect_ratio: Optional[float] = None
    max_random_rotate_angle: Optional[float] = None
    max_random_shear_ratio: Optional[float] = None
    min_random_scale: Optional[float] = None
    max_random_scale: Optional[float] = None
    max_random_h: Optional[float] = None
    max_random_s: Optional[float] = None
    max_random_l: Optional[float] = None
    brightness: Optional[float] = None
    contrast: Optional[float] = None
    saturation: Optional[float] = None
    pca_noise: Optional[float] = None

    def schedule(self) -> str:
        """The LR schedule in force, with MXNet's implicit choice when ``lr_schedule`` is unset."""
        if self.lr_schedule:
            return self.lr_schedule
        if self.lr_factor_epoch:
            return "step"
        if self.lr_step_epochs:
            return "multistep"
        return "constant"

    def gpu_ids(self) -> list[int]:
        text = (self.gpus or "").strip()
        if not text:
            return []
        try:
            ids = [int(v) for v in text.split(",") if v.strip() != ""]
        except ValueError:
            raise UsageError(f"gpus must be comma-separated device numbers like '0,1,3' or empty for CPU, got {text!r}") from None
        if len(set(ids)) != len(ids) or any(i < 0 for i in ids):
            raise UsageError(f"gpus must be distinct non-negative device numbers, got {text!r}")
        return ids

    def checkpoint_path(self, epoch: int) -> str:
        """This run's checkpoint at the end of ``epoch`` (see :mod:`lit_imgcls.checkpoints`)."""
        from lit_imgcls.checkpoints import epoch_path

        return epoch_path(self.model_prefix or "", epoch)

    def build_callbacks(self, allow_any_class: bool = False) -> list:
        """The Lightning callbacks that ``callbacks`` names (see :func:`lit_imgcls.classpath.build_callbacks`)."""
        from lit_imgcls.classpath import build_callbacks

        return build_callbacks(self, allow_any_class)

    def to_yaml(self) -> str:
        """The recipe as YAML (printed by ``--print-recipe``, saved beside checkpoints and in run folders). MXNet's
        augmentation flags are input shortcuts that :func:`resolve_augment_flags` turns into ``augment`` stages;
        left unset they are not written, so the file says what runs without 19 empty keys."""
        values = dataclasses.asdict(self)
        for key in AUGMENT_FLAGS:
            if values.get(key) is None:
                values.pop(key, None)
        return yaml.safe_dump(values, sort_keys=False)


FIELDS = {f.name: f for f in dataclasses.fields(Recipe)}

# Other command-line spellings of recipe keys, beside --key-name and --key_name (the one home of such aliases;
# cli.build_parser adds them to every command that takes the recipe's keys, and --help shows them): the older
# MXNet tutorial wrote --num-epoch where fit.py has --num-epochs.
FLAG_ALIASES: dict[str, tuple[str, ...]] = {
    "num_epochs": ("--num-epoch",),
    "precision": ("--dtype",),  # fit.py's --dtype float32|float16 (DTYPE_PRECISIONS)
}
# MXNet's --dtype values as the precision they meant.
DTYPE_PRECISIONS = {"float32": "32-true", "float16": "16-mixed", "bfloat16": "bf16-mixed"}
PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true")


def check_scalars(recipe: Recipe) -> None:
    """The checks every key gets, whatever it means: null only where allowed, finite floats, 64-bit integers, text
    without NUL.

    Raises:
        UsageError: naming the first key that fails.
    """
    hints = typing.get_type_hints(Recipe)
    for key in FIELDS:
        value = getattr(recipe, key)
        # The parser lets `key: null` through for any type; only Optional keys have a meaning for it. (score's
        # options hold every key as None until given: the checkpoint's recipe fills them in.)
        if value is None and isinstance(recipe, Recipe) and type(None) not in typing.get_args(hints[key]):
            raise UsageError(f"{key} cannot be null (its default is {FIELDS[key].default!r})")
        # NaN and inf slip past validate()'s range checks (NaN compares False both ways) and mean nothing anywhere.
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{key} must be a finite number, got {value}")
        # Python takes any integer; torch, numpy and the OS do not. A YAML hex literal can even be too long for
        # str() (over 4300 digits), so the message gives its size.
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
            raise UsageError(f"{key} must fit a signed 64-bit integer, got a {value.bit_length()}-bit one")
        # The OS refuses such paths with a bare ValueError.
        if isinstance(value, str) and "\0" in value:
            raise UsageError(f"{key} must not contain a NUL character, got {value!r:.80}")


# Keys that name a file or folder on this machine: ~ and $VAR in them are expanded once, here (see userpaths).
PATH_KEYS = ("model_prefix", "run_dir", "data_dir", "data_url", "data_train", "data_val", "data_cache", "pretrained",
             "class_weights")


def expand_paths(recipe: Any) -> Any:
    """Expands ``~`` and environment variables in the path keys (:data:`PATH_KEYS`) of ``recipe`` in place, as a
    shell would (URLs unchanged); ``recipe`` is a Recipe or any object with those attributes (None = unset).

    Raises:
        UsageError: an unset variable or an unknown ``~user``, naming the key.
    """
    from lit_imgcls.userpaths import expand_path

    for key in PATH_KEYS:
        value = getattr(recipe, key, None)
        if isinstance(value, str):
            if key == "model_prefix" and value.startswith("file://"):
                value = value[len("file://"):]  # a local path, with a local prefix's lock and atomic renames
            setattr(recipe, key, expand_path(value, key))
    return recipe


def resolve_spellings(recipe: Any) -> Any:
    """Replaces MXNet's value spellings by the recipe's own, in place (validate and ``--print-recipe`` call it):
    ``precision`` float16 (``--dtype float16``) is 16-mixed (:data:`DTYPE_PRECISIONS`); MXNet's augmentation flags
    become ``augment`` stages (:func:`resolve_augment_flags`)."""
    precision = getattr(recipe, "precision", None)
    if isinstance(precision, str) and precision in DTYPE_PRECISIONS:
        recipe.precision = DTYPE_PRECISIONS[precision]
    resolve_augment_flags(recipe)
    return recipe


# MXNet's augmentation flags (image_aug_default.cc's options): shortcuts that add ``augment`` stages.
AUGMENT_FLAGS = ("max_random_rotate_angle", "max_random_shear_ratio", "min_random_scale", "max_random_scale",
                 "random_resized_crop", "min_random_area", "max_random_area", "min_random_aspect_ratio",
                 "max_random_aspect_ratio", "pad_size", "random_crop", "random_mirror", "max_random_h",
                 "max_random_s", "max_random_l", "brightness", "contrast", "saturation", "pca_noise")


def resolve_augment_flags(recipe: Any) -> Any:
    """MXNet's augmentation flags as ``augment`` stages, in place: the stages they name go before the list's own
    (geometry, then crop, flip and colour, as MXNet's default augmenter orders them), and the flags are unset, so
    that the recipe printed and saved says what runs. A flag of 0 adds nothing.

    Raises:
        UsageError: a negative value, or a switch (random_mirror, random_crop) other than 0 or 1, naming its key.
    """
    flags = {k: getattr(recipe, k, None) for k in AUGMENT_FLAGS}
    given = {k: v for k, v in flags.items() if v is not None and not isinstance(v, bool) and
             isinstance(v, (int, float)) and v != 0}
    for key, value in given.items():
        if value < 0:
            raise UsageError(f"{key} must be >= 0 (0: off), got {value}")
        if key in ("random_mirror", "random_crop") and value != 1:  # MXNet's switches: 0 or 1, nothing else
            raise UsageError(f"{key} must be 0 (off) or 1 (on), got {value}")
    scale_given = any(k in given and given[k] != 1 for k in ("min_random_scale", "max_random_scale"))
    if not given or (set(given) <= {"min_random_scale", "max_random_scale"} and not scale_given):
        for key in flags:
            if hasattr(recipe, key):
                setattr(recipe, key, None)
        return recipe
    stages: list[dict[str, Any]] = []
    if "max_random_rotate_angle" in given:
        stages.append({"name": "rotate", "degrees": given["max_random_rotate_angle"]})
    if "max_random_shear_ratio" in given:
        stages.append({"name": "shear", "ratio": given["max_random_shear_ratio"]})
    if scale_given:
        stages.append({"name": "scale", "min": given.get("min_random_scale", 1.0), "max": given.get("max_random_scale", 1.0)})
    area_keys = ("random_resized_crop", "min_random_area", "max_random_area", "min_random_aspect_ratio", "max_random_aspect_ratio")
    if any(k in given for k in area_keys):
        stage: dict[str, Any] = {"name": "random_resized_crop",
                                 "area": [given.get("min_random_area", 0.08), given.get("max_random_area", 1.0)]}
        if "min_random_aspect_ratio" in given:
            stage["ratio"] = [given["min_random_aspect_ratio"], given.get("max_random_aspect_ratio", 4 / 3)]
        elif "max_random_aspect_ratio" in given:  # MXNet: [1 - max, 1 + max] when no minimum is given
            stage["ratio"] = [max(1 - given["max_random_aspect_ratio"], 0.01), 1 + given["max_random_aspect_ratio"]]
        stages.append(stage)
    if "pad_size" in given or "random_crop" in given:
        stages.append({"name": "random_crop", "pad": given.get("pad_size", 0)})
    if "random_mirror" in given:
        stages.append({"name": "mirror"})
    hsl = {k[-1]: given[k] for k in ("max_random_h", "max_random_s", "max_random_l") if k in given}
    if hsl:
        stages.append({"name": "hsl", **hsl})
    jitter = {k: given[k] for k in ("brightness", "contrast", "saturation") if k in given}
    if jitter:
        stages.append({"name": "color_jitter", **jitter})
    if "pca_noise" in given:
        stages.append({"name": "pca_noise", "std": given["pca_noise"]})
    own = getattr(recipe, "augment", None)
    recipe.augment = stages + (list(own) if isinstance(own, list) else [])
    for key in flags:
        setattr(recipe, key, None)
    return recipe


def resolve_defaults(recipe: Any) -> Any:
    """Fills in, in place, the keys whose default depends on the machine (validate and ``--print-recipe`` call
    it, so the printed and saved recipe show the value used): ``data_nthreads`` unset is
    :func:`~lit_imgcls.cores.default_data_nthreads` for the run's processes on this machine."""
    if getattr(recipe, "data_nthreads", 0) is None:
        from lit_imgcls.cores import default_data_nthreads

        gpus = [g for g in str(getattr(recipe, "gpus", "") or "").split(",") if g.strip()]
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "0") or 0)  # torchrun's processes per machine
        recipe.data_nthreads = default_data_nthreads(len(gpus) or local or getattr(recipe, "num_processes", 1) or 1)
    return recipe


def validate(recipe: Recipe, *, allow_any_class: bool = False, here: bool = True) -> Recipe:
    """Checks values that types alone do not; fills in the machine's defaults (:func:`resolve_defaults`).

    Args:
        recipe: the recipe to check.
        allow_any_class: ``--allow-any-class`` was given: ``callbacks`` may name any dotted path (not imported here).
        here: also check what this machine must hold: the paths it reads, a usable URL ``model_prefix``, the
            dataset, kv-store and network installed; ``--print-recipe`` checks values only, so that it prints a
            recipe meant for another machine.

    Raises:
        UsageError: naming the key and what is valid; its ``key`` is that key, so the CLI can name the recipe file
            the value came from.
    """
    try:
        return _validate(recipe, allow_any_class, here)
    except UsageError as exc:
        if exc.key is None:  # the messages of the checks start with the key they are about
            first = str(exc).split(" ", 1)[0]
            exc.key = first if first in FIELDS else None
        raise


def _validate(recipe: Recipe, allow_any_class: bool, here: bool) -> Recipe:
    from lit_imgcls.classpath import check_class_paths

    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise UsageError(msg)

    check_scalars(recipe)
    expand_paths(recipe)
    resolve_spellings(recipe)
    resolve_defaults(recipe)
    # First of the named checks: a refused class_path is the one message that matters in such a recipe.
    check_class_paths(recipe, allow_any_class)
    need(0 <= recipe.seed < 2**32, f"seed must lie in [0, 2**32), got {recipe.seed}")  # Lightning would use 0 instead
    need(recipe.batch_size > 0, f"batch_size must be a positive integer, got {recipe.batch_size}")
    need(recipe.fused_steps > 0, f"fused_steps must be a positive integer, got {recipe.fused_steps}")
    need(recipe.num_epochs > 0, f"num_epochs must be a positive integer, got {recipe.num_epochs}")
    need(recipe.backbone_lr_mult > 0, f"backbone_lr_mult must be positive (use freeze_backbone to stop training it), got {recipe.backbone_lr_mult}")
    need(recipe.lr > 0, f"lr must be positive, got {recipe.lr}")
    need(0 <= recipe.mom < 1, f"mom must lie in [0, 1), got {recipe.mom}")
    need(recipe.wd >= 0, f"wd must be >= 0, got {recipe.wd}")
    need(0 <= recipe.label_smoothing < 1, f"label_smoothing must lie in [0, 1), got {recipe.label_smoothing}")
    # The file itself is read by fit alone (score and validate rebuild a checkpoint's recipe, which names it).
    need(recipe.class_weights is None or bool(str(recipe.class_weights).strip()),
         "class_weights must be 'auto' or a file of one weight per class (or unset), got ''")
    from lit_imgcls.training_options import OptimConfig

    for key, ok, valid in OptimConfig.from_recipe(recipe).problems():
        need(ok, f"{key} must be {valid}, got {getattr(recipe, key)!r}")
    need(0 < recipe.lr_factor <= 1, f"lr_factor must lie in (0, 1], got {recipe.lr_factor}")
    need(recipe.lr_factor_epoch is None or recipe.lr_factor_epoch > 0, f"lr_factor_epoch must be positive, got {recipe.lr_factor_epoch}")
    need(recipe.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {recipe.warmup_epochs}")
    need(0 < recipe.onecycle_pct < 1, f"onecycle_pct must lie in (0, 1), got {recipe.onecycle_pct}")
    need(recipe.top_k >= 0, f"top_k must be >= 0, got {recipe.top_k}")
    need(recipe.disp_batches > 0, f"disp_batches must be positive, got {recipe.disp_batches}")
    need(recipe.num_processes > 0, f"num_processes must be a positive integer, got {recipe.num_processes}")
    need(recipe.num_processes == 1 or not recipe.gpu_ids(),
         f"num_processes {recipe.num_processes} is for CPU training; with gpus {recipe.gpus!r} each listed GPU gets one process")
    need(recipe.dist_timeout > 0, f"dist_timeout must be positive seconds, got {recipe.dist_timeout}")
    need(recipe.save_period > 0, f"save_period must be positive, got {recipe.save_period}")
    need(recipe.save_every_steps is None or recipe.save_every_steps > 0,
         f"save_every_steps must be a positive number of steps (or unset), got {recipe.save_every_steps}")
    need(recipe.save_every_steps is None or bool(recipe.model_prefix), "save_every_steps needs model_prefix (where checkpoints go)")
    need(recipe.data_nthreads >= 0, f"data_nthreads must be >= 0, got {recipe.data_nthreads}")
    need(recipe.threads is None or recipe.threads > 0, f"threads must be positive, got {recipe.threads}")
    need(recipe.num_examples is None or recipe.num_examples > 0, f"num_examples must be positive, got {recipe.num_examples}")
    need(recipe.num_classes is None or recipe.num_classes >= 2,
         f"num_classes must be 2 or more (a classifier needs two classes), got {recipe.num_classes}")
    for key in ("rgb_mean", "rgb_std"):
        parse_rgb(getattr(recipe, key), key)
    need(recipe.load_epoch is None or recipe.load_epoch > 0, f"load_epoch must be a positive epoch number, got {recipe.load_epoch}")
    need(recipe.load_epoch is None or bool(recipe.model_prefix), "load_epoch needs model_prefix (where the checkpoints are)")
    need(recipe.resume in (None, "auto"), f"resume must be 'auto' (or unset), got {recipe.resume!r}")
    need(recipe.resume is None or bool(recipe.model_prefix), "resume needs model_prefix (where the checkpoints are)")
    need(recipe.resume is None or recipe.load_epoch is None, "give either resume auto or load_epoch N, not both")
    if here and recipe.model_prefix and "://" in recipe.model_prefix:
        from lit_imgcls.storage import check_location

        check_location(recipe.model_prefix, "model_prefix")
    need(recipe.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {recipe.precision!r}")
    need(recipe.schedule() in SCHEDULES, f"lr_schedule must be one of {', '.join(SCHEDULES)}")
    need(recipe.schedule() != "step" or bool(recipe.lr_factor_epoch), "lr_schedule 'step' needs lr_factor_epoch")
    need(recipe.schedule() != "multistep" or bool(recipe.lr_step_epochs), "lr_schedule 'multistep' needs lr_step_epochs like '30,60'")
    # Keys another schedule reads would be silently ignored: the run would not train as the recipe says.
    sched = recipe.schedule()
    reads = keys_read(sched)
    need(not recipe.lr_factor_epoch or reads["lr_factor_epoch"],
         f"lr_factor_epoch is set ({recipe.lr_factor_epoch}) but lr_schedule {sched} does not read it: use "
         "lr_schedule step, or unset lr_factor_epoch (--lr-factor-epoch null)")
    need(not recipe.lr_step_epochs or reads["lr_step_epochs"],
         f"lr_step_epochs is set ({recipe.lr_step_epochs!r}) but lr_schedule {sched} does not read it: use "
         "lr_schedule multistep, or unset lr_step_epochs (--lr-step-epochs null)")
    need(not recipe.warmup_epochs or reads["warmup_epochs"],
         f"warmup_epochs is set ({recipe.warmup_epochs}) but lr_schedule onecycle warms up by itself over "
         "onecycle_pct of the steps: set onecycle_pct instead, or warmup_epochs 0")
    try:
        parse_epochs(recipe.lr_step_epochs)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    train_resolution(recipe, parse_image_shape(recipe.image_shape)[1:] if recipe.image_shape else None)
    if recipe.image_shape:
        width = parse_image_shape(recipe.image_shape)[2]
        need(not recipe.tta_flip or width >= 2, f"tta_flip mirrors images left to right, but image_shape "
             f"{recipe.image_shape} is 1 pixel wide: leave tta_flip false")
    recipe.gpu_ids()
    if recipe.augment is not None:
        from lit_imgcls.data.augment import StageContext, check_stages

        # Each stage built once: its arguments are taken. ``--print-recipe`` (not here) skips the stages of plugins
        # this machine lacks.
        shape = parse_image_shape(recipe.image_shape) if recipe.image_shape else (3, 32, 32)
        recipe.augment = check_stages(recipe.augment, StageContext(shape, recipe.num_classes or 10),
                                      only_known=not here)
    if recipe.augment_device:
        from lit_imgcls.data.augment import check_device_stages

        check_device_stages(recipe.augment, only_known=not here)
    if not here:
        return recipe
    check_paths_exist(recipe)
    from lit_imgcls.registry import datasets, networks, strategies
    from lit_imgcls.networks.factory import resolve_name

    for key, lookup in (("dataset", lambda: check_dataset_keys(recipe, datasets.get(recipe.dataset))),
                        ("kv_store", lambda: strategies.get(recipe.kv_store)),
                        ("network", lambda: networks.get(resolve_name(recipe.network, recipe.num_layers)))):
        try:
            lookup()
        except UsageError as exc:  # "unknown network 'x'": the registry's words; the key is this one
            exc.key = exc.key or key
            raise
    return recipe


RES_KEYS = ("min_res", "max_res", "start_ramp", "end_ramp")  # the progressive-resizing keys (FFCV's names)


def train_resolution(recipe: Any, image_hw: tuple[int, int] | None) -> Any:
    """The training-resolution schedule of ``recipe`` (:class:`~lit_imgcls.schedules.ResolutionSchedule`), or None
    when training images keep the evaluation size (min_res and max_res unset or both the image's shorter side).

    Args:
        recipe: a Recipe (or an object with its keys).
        image_hw: (H, W) of the evaluation input; None when not known yet (``validate`` without image_shape): then
            only the checks that need no image size are made, and None is returned.

    Raises:
        UsageError: a side or an epoch out of range, min_res > max_res, start_ramp > end_ramp, ramp epochs
            without a ramp or a ramp without them; naming the keys.
    """
    from lit_imgcls.data.preprocess import MAX_SIDE
    from lit_imgcls.schedules import ResolutionSchedule

    lo, hi, start, end = (getattr(recipe, k, None) for k in RES_KEYS)
    for key, value in (("min_res", lo), ("max_res", hi)):
        if value is not None and not 1 <= value <= MAX_SIDE:
            raise UsageError(f"{key} must be a side in pixels in [1, {MAX_SIDE}] (unset: image_shape's), got {value}")
    for key, value in (("start_ramp", start), ("end_ramp", end)):
        if value is not None and value < 0:
            raise UsageError(f"{key} must be an epoch >= 0 (0-based, as FFCV's), got {value}")
    if (start is None) != (end is None):
        raise UsageError(f"start_ramp and end_ramp go together (the epochs where the training side leaves min_res "
                         f"and reaches max_res); got start_ramp {start}, end_ramp {end}")
    if start is not None and start > end:
        raise UsageError(f"start_ramp {start} is after end_ramp {end}: the ramp from min_res to max_res starts at "
                         "start_ramp and ends at end_ramp")
    # A ramp past num_epochs is allowed, as in FFCV: the side is a function of the epoch, so a run with fewer epochs
    # (an MXNet tutorial's --num-epoch 60 on recipes/imagenet.yaml) stops on the way and a longer resumed one goes on.
    if lo is not None and hi is not None and lo > hi:
        raise UsageError(f"min_res {lo} exceeds max_res {hi}: the training side grows from min_res to max_res "
                         "(FFCV's 160 -> 192)")
    if lo is None and hi is None:
        if start is not None:
            raise UsageError(f"start_ramp and end_ramp are set ({start}, {end}) but min_res and max_res are not: "
                             "there is no ramp; give --min-res and --max-res, or unset the ramp epochs")
        return None
    if image_hw is None and (lo is None or hi is None):
        return None  # the image's side fills in the other one: checked again when the data is known
    side = min(image_hw) if image_hw is not None else None
    lo, hi = (lo if lo is not None else side), (hi if hi is not None else side)
    if lo > hi:
        which = "max_res" if getattr(recipe, "max_res", None) is None else "min_res"
        raise UsageError(f"min_res {lo} exceeds max_res {hi} ({which} unset: the image_shape side {side}): the "
                         "training side grows from min_res to max_res; set both")
    if lo != hi and start is None:
        raise UsageError(f"min_res {lo} and max_res {hi} differ: give --start-ramp and --end-ramp, the epochs where "
                         "the training side leaves min_res and reaches max_res (FFCV's rn50 88-epoch recipe: 65, 76)")
    if lo == hi and start is not None:
        raise UsageError(f"start_ramp and end_ramp are set ({start}, {end}) but min_res and max_res are both {lo}: "
                         "there is no ramp; unset the ramp epochs, or give different sides")
    if lo == hi == side:
        return None
    return ResolutionSchedule(lo, hi, start or 0, end or 0)


def check_paths_exist(recipe: Recipe) -> None:
    """Refuses a local ``data_dir``, ``data_train``, ``data_val`` or ``pretrained`` that does not exist, naming the
    command that makes it when a shipped recipe says so (:func:`lit_imgcls.shipped.prepare_hint`); a ``data_dir``
    that the dataset downloads into (``creates_data_dir``: CIFAR-10, MNIST with ``data_url``) may be missing.

    Raises:
        UsageError: ``KEY does not exist: PATH``, with the preparing command when one is known.
    """
    from lit_imgcls.shipped import prepare_hint

    for key in ("data_dir", "data_train", "data_val", "pretrained"):
        value = getattr(recipe, key)
        if not value or "://" in value or (os.path.isdir(value) if key == "data_dir" else os.path.exists(value)):
            continue
        if key == "data_dir":
            from lit_imgcls.registry import datasets

            creates = getattr(datasets.get(recipe.dataset), "creates_data_dir", None)
            if creates is not None and creates(recipe.data_url):
                continue
        raise UsageError(f"{key} does not exist: {value}{prepare_hint(value)}")


def parse_rgb(text: str | None, key: str) -> tuple[float, ...] | None:
    """MXNet's ``--rgb-mean``/``--rgb-std`` text, ``"123.68,116.779,103.939"`` (0-255 scale), as the 0-1 scale
    statistics the DataModules and checkpoints hold (each value / 255); None when unset.

    Raises:
        UsageError: not comma-separated finite numbers in [0, 255] (``rgb_std``: in (0, 255]), naming ``key``.
    """
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        values = ()
    low_ok = (lambda v: v > 0) if key == "rgb_std" else (lambda v: v >= 0)
    if not values or not all(math.isfinite(v) and low_ok(v) and v <= 255 for v in values):
        bounds = "(0, 255]" if key == "rgb_std" else "[0, 255]"
        raise UsageError(f"{key} must be comma-separated numbers in {bounds} on the 0-255 pixel scale, like "
                         f"'123.68,116.779,103.939', got {text!r:.80}")
    return tuple(v / 255 for v in values)


def parse_image_shape(text: str) -> tuple[int, int, int]:
    """``"C,H,W"`` as three integers, within the bounds of any network input
    (:func:`~lit_imgcls.data.preprocess.input_size_problem`).

    Raises:
        UsageError: not three positive integers, or a shape out of bounds (10^5 x 10^5, say).
    """
    from lit_imgcls.data.preprocess import input_size_problem

    parts = text.split(",")
    if not (len(parts) == 3 and all(re.fullmatch(r"\s*[0-9]{1,9}\s*", p) and int(p) > 0 for p in parts)):
        raise UsageError(f"image_shape must be 'C,H,W' with positive integers, got {text!r:.60}")
    shape = (int(parts[0]), int(parts[1]), int(parts[2]))
    problem = input_size_problem(shape, "image_shape")
    if problem:
        raise UsageError(problem)
    return shape


# Keys that say which data a run reads. A dataset that does not take one of them would quietly read other data
# than the user named (`fit --recipe recipes/mnist.yaml --data-train PACK` training MNIST), so setting one for
# such a dataset is an error. (Keys that only tune speed, like data_nthreads or fused_steps, are not listed.)
# num_examples is not among them: a dataset that does not take it is checked against it instead
# (data.checks.check_described_data).
DATA_KEYS = ("data_dir", "data_url", "data_train", "data_val", "data_cache", "image_shape")


def dataset_keys(cls) -> set[str] | None:
    """The recipe keys a dataset class reads: its ``__init__`` parameters when it is built by the base
    ``from_recipe`` (which passes exactly those); None when it builds itself some other way."""
    import inspect

    from lit_imgcls.data.base import ImageDataModule

    own = getattr(cls, "from_recipe", None)
    if getattr(own, "__func__", None) is not ImageDataModule.from_recipe.__func__:
        return None
    return set(inspect.signature(cls.__init__).parameters) - {"self"}


def check_dataset_keys(recipe: Recipe, cls) -> None:
    """Refuses a data key (:data:`DATA_KEYS`) set to something the chosen dataset does not read.

    Raises:
        UsageError: naming the key, the dataset, and the datasets that do read it.
    """
    reads = dataset_keys(cls)
    if reads is None:
        return
    if recipe.augment and "augment" not in reads and not recipe.augment_device:
        from lit_imgcls.data.augment import split_levels

        sample = split_levels(recipe.augment)[0]
        if sample:
            raise UsageError(f"augment names per-image stages ({', '.join(s['name'] for s in sample)}) but dataset "
                             f"{recipe.dataset} takes no augment pipeline; use --augment-device true to run them on "
                             "the training device, --dataset wds, folder or an in-memory dataset, or keep only the "
                             "batch stages (mixup, cutmix)")
    for key in DATA_KEYS:
        value = getattr(recipe, key)
        if value == FIELDS[key].default or key in reads:
            continue
        from lit_imgcls.registry import datasets

        users = []
        for name in datasets.names():
            try:
                keys = dataset_keys(datasets.get(name))
            except Exception:  # noqa: BLE001 - a broken plugin must not hide this message
                continue
            if keys is not None and key in keys:
                users.append(name)
        hint = ""
        if key in ("data_train", "data_val", "data_dir") and isinstance(value, str) and "://" not in value and \
                os.path.isfile(os.path.join(value, "manifest.json")):
            hint = f"; {value} is a pack: add --dataset wds (or ffcv)"
        raise UsageError(f"{key} is set ({value!r}) but dataset {recipe.dataset} does not read it, so it would "
                         f"train on other data than you named; datasets that read {key}: "
                         f"{', '.join(users) or 'none'}{hint}")
