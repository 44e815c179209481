"""The explainer contract: :class:`Explanation`, the :class:`Explainer` base class and the registry.

An explainer is built once for a model (``GradCAM(model, layer=None)``) and called on batches
(``explainer(images, target="glaucoma")``). Every method returns maps of shape B×1×H×W at the
input resolution, on the model's device; larger values mean "more evidence for the target".

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(4, 2))
    >>> explanation = EXPLAINERS["input_x_gradient"](net)(torch.rand(2, 3, 8, 8), target=1)
    >>> tuple(explanation.maps.shape), explanation.method
    ((2, 1, 8, 8), 'input_x_gradient')
"""

from __future__ import annotations

import functools
import inspect
import sys
import textwrap
import time
import types
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Literal, Mapping

import torch
from torch import Tensor, nn

from xmed.errors import ConfigError, InputError
from xmed.explain.targets import Target
from xmed.findings import canonical_target
from xmed.registry import Registry, RegistryView

ChannelReduce = Literal["sum", "abs_sum", "max_abs"]


@dataclass
class Explanation:
    """Saliency maps of one batch.

    Attributes:
        maps: B×1×H×W at input resolution, on the model's device.
        method: registry name of the explainer.
        target: the explained target as text (``"glaucoma"``, ``"DH"``, ``"class 3"``, ...).
        seconds: wall time of the computation (device synchronised).
    """

    maps: Tensor
    method: str
    target: str
    seconds: float


#: the kinds of explanation method: a map of where the evidence lies (``saliency``), an edited image
#: (``edit``: the counterfactual methods), the decision's reasons in clinical words (``rationale``)
KINDS = ("saliency", "edit", "rationale")


class ModelMethod:
    """What every explanation method holds and says of itself: the model and the device its
    parameters are on; its registry ``name``, the ``title`` readers see (a review panel's) and its
    ``kind`` (one of :data:`KINDS`), class attributes that :func:`register_method` checks.

    The two class methods are the cost model of ``xmed-explain``'s ``batch_size: auto``
    (:func:`xmed.pipeline.explanation.explanation_eye_bytes`), read from a method's config options.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    kind: ClassVar[str] = ""

    def __init__(self, model: nn.Module):
        self.model = model

    @property
    def device(self) -> torch.device:
        param = next(self.model.parameters(), None)
        return param.device if param is not None else torch.device("cpu")

    @classmethod
    def held_graphs(cls, options: Mapping[str, Any]) -> int:
        """Forward graphs of an eye the method holds at once for its backward pass (one)."""
        return 1

    @classmethod
    def recorded_frames(cls, options: Mapping[str, Any]) -> int:
        """Input-sized images per eye the method keeps beside the eye itself (none; an edit's path)."""
        return 0


def option_value(cls: type, options: Mapping[str, Any], name: str) -> Any:
    """The constructor argument ``name`` of ``cls`` as ``options`` set it, else its default.

    Example:
        >>> class Noisy(Explainer):
        ...     def __init__(self, model, n_samples: int = 25):
        ...         super().__init__(model)
        >>> option_value(Noisy, {}, "n_samples"), option_value(Noisy, {"n_samples": 8}, "n_samples")
        (25, 8)
    """
    if name in options:
        return options[name]
    return inspect.signature(cls).parameters[name].default


class Explainer(ModelMethod):
    """Base class of the saliency explainers: subclasses set ``name`` and ``title`` and implement
    :meth:`attribute`.

    Args:
        model: any ``nn.Module`` (a :class:`~xmed.models.FundusClassifier`, timm, torchvision or
            MONAI classifier). Pass it in eval mode: explanations of a model in training mode
            depend on the rest of the batch (BatchNorm) and on dropout.
    """

    kind = "saliency"
    #: whether its cost is backward passes, which bf16 autocast speeds up (``xmed-explain autocast=``);
    #: a method that reads small differences of the model's scores (occlusion, RISE) keeps False
    backward_pass: ClassVar[bool] = False

    def attribute(self, images: Tensor, target: Target | None) -> Tensor:
        """B×1×H×W maps for ``images`` (already on the model's device)."""
        raise NotImplementedError

    def __call__(self, images: Tensor, target: Target | None = None) -> Explanation:
        """Explain ``target`` (None: ``"glaucoma"`` on models with named heads, else each image's
        predicted class) for a B×C×H×W batch."""
        images = check_images(images, self.model).to(self.device)
        synchronize(images.device)
        start = time.perf_counter()
        maps = self.attribute(images, target)
        synchronize(images.device)
        seconds = time.perf_counter() - start
        if maps.shape != (images.shape[0], 1, *images.shape[2:]):
            raise RuntimeError(f"{self.name} returned maps of shape {tuple(maps.shape)}")
        return Explanation(maps.detach(), self.name, describe_target(target), seconds)


def reduce_channels(attributions: Tensor, how: ChannelReduce) -> Tensor:
    """B×C×H×W input attributions -> B×1×H×W maps.

    Example:
        >>> reduce_channels(torch.tensor([[[[1.0]], [[-3.0]]]]), "abs_sum").item()
        4.0
    """
    if how == "sum":
        return attributions.sum(dim=1, keepdim=True)
    if how == "abs_sum":
        return attributions.abs().sum(dim=1, keepdim=True)
    if how == "max_abs":
        return attributions.abs().amax(dim=1, keepdim=True)
    raise ConfigError("channel_reduce", f"must be sum, abs_sum or max_abs, got {how!r}")


def describe_target(target: Target | None) -> str:
    """The target as text: its canonical name, ``"class 3"``, ``"class per image"``, ``"default"``.

    Example:
        >>> describe_target("vCDR"), describe_target(3)
        ('vcdr', 'class 3')
    """
    if target is None:
        return "default"
    if isinstance(target, str):
        return canonical_target(target)
    if isinstance(target, int):
        return f"class {target}"
    if isinstance(target, Tensor):
        return "class per image"
    return getattr(target, "__name__", "callable")


def check_images(images: Any, model: nn.Module | None = None, name: str = "images") -> Tensor:
    """``images`` if it is what explainers, counterfactuals and rationales take — a non-empty
    B×C×H×W floating tensor of finite values, in the model's dtype — else :class:`InputError`
    saying what is wrong and what to pass instead (one message for every entry point).

    Example:
        >>> check_images(torch.zeros(2, 3, 8, 8)).shape
        torch.Size([2, 3, 8, 8])
        >>> check_images(torch.zeros(8, 8, 3, dtype=torch.uint8))
        Traceback (most recent call last):
        ...
        xmed.errors.InputError: images: must be a B×C×H×W batch, got shape (8, 8, 3) — one H×W×C photograph? prepare it for the model: model.prepare(image)
    """
    prepare = "prepare it for the model: model.prepare(image)"
    if not isinstance(images, Tensor):
        raise InputError(name, f"must be a torch tensor (B×C×H×W, float, normalised as the model expects), "
                               f"got {type(images).__module__}.{type(images).__name__}; {prepare}")
    shape = tuple(images.shape)
    if images.ndim != 4:
        hint = " — one H×W×C photograph? " + prepare if images.ndim == 3 and shape[-1] in (1, 3) else ""
        raise InputError(name, f"must be a B×C×H×W batch, got shape {shape}{hint}")
    if shape[0] == 0:
        raise InputError(name, "is an empty batch (B = 0)")
    if shape[1] not in (1, 3) and shape[-1] in (1, 3):
        raise InputError(name, f"shape {shape} looks channels-last (B×H×W×C); pass images.permute(0, 3, 1, 2)")
    if not images.is_floating_point():
        raise InputError(name, f"must be floating point, normalised as the model expects, got {images.dtype} "
                               f"(raw 0-255 pixels?); {prepare}")
    parameter = next(iter(model.parameters()), None) if model is not None else None
    if parameter is not None and images.dtype != parameter.dtype:
        raise InputError(name, f"are {images.dtype} but the model computes in {parameter.dtype}; "
                               f"pass images.to({parameter.dtype})")
    finite = torch.isfinite(images).flatten(1).all(dim=1)
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten().tolist()
        raise InputError(name, f"image(s) {bad[:10]} of the batch hold NaN or infinite values: "
                               f"no explanation or decision can be read from them")
    return images


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so that wall-clock timings are real."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_module_callable(module_name: str, function: Callable[..., Any]) -> None:
    """Let ``package(...)`` call ``function`` while the package's classes stay its attributes
    (``xmed.explain(model, x)`` and ``xmed.explain.GradCAM``). ``inspect.signature(package)`` is
    the function's, and ``help(package)`` shows the function's docstring after the package's."""
    signature = inspect.signature(function)

    class _CallableModule(types.ModuleType):
        __signature__ = signature  # inspect reads it from the class: a module instance is the callable

        @functools.wraps(function)
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return function(*args, **kwargs)

    module = sys.modules[module_name]
    module.__class__ = _CallableModule
    module.__doc__ = (f"{(module.__doc__ or '').rstrip()}\n\nCalling the package: {function.__name__}{signature}\n\n"
                      f"{textwrap.indent(inspect.getdoc(function) or '', '    ')}\n")


#: Every explanation method by name, whatever its kind: the saliency explainers, the edit methods
#: (:data:`xmed.explain.counterfactual.COUNTERFACTUALS`) and the rationale
#: (aliases: ``gradcam++``, ``ig``).
METHODS: Registry[type[ModelMethod]] = Registry(
    "explanation method", key="method", aliases={"gradcam++": "gradcampp", "ig": "integrated_gradients"})
#: The saliency explainers of :data:`METHODS` by name (aliases: ``gradcam++``, ``ig``).
EXPLAINERS: RegistryView[type[Explainer]] = METHODS.view("explainer", lambda cls: cls.kind == "saliency")


def register_method(cls: type[ModelMethod]) -> type[ModelMethod]:
    """Class decorator: make an explanation method of any kind available by its ``name``
    (:data:`METHODS`; ``xmed-explain explainer=<name>`` with a config file ``explainer/<name>.yaml``),
    once it states its ``title`` and its ``kind``.

    Example:
        >>> class Blank(Explainer):
        ...     name, title = "blank", ""
        >>> register_method(Blank)
        Traceback (most recent call last):
        ...
        ValueError: Blank states no title (the name readers see, e.g. 'Grad-CAM')
    """
    if not cls.title:
        raise ValueError(f"{cls.__name__} states no title (the name readers see, e.g. 'Grad-CAM')")
    if cls.kind not in KINDS:
        raise ValueError(f"{cls.__name__} has kind {cls.kind!r}; one of {', '.join(KINDS)}")
    return METHODS.register(cls)


def register_explainer(cls: type[Explainer]) -> type[Explainer]:
    """Class decorator: make a saliency explainer available by its ``name`` (``xmed.explain(method=name)``)."""
    if cls.kind != "saliency":
        raise ValueError(f"{cls.__name__} is of kind {cls.kind!r}, not a saliency explainer: use register_method")
    return register_method(cls)


def get_explainer(method: str) -> type[Explainer]:
    """The explainer class registered as ``method`` (aliases: ``gradcam++``, ``ig``)."""
    return EXPLAINERS.lookup(method)
