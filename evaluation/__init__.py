"""Evaluation: the commands that measure the transition (installed as ``attn_transition.evaluation``).

The top layer: it uses the core (:mod:`attn_transition`) and the integrations' public packages
(:mod:`attn_transition.patches.transformers`, :mod:`attn_transition.patches.vllm`), never their
modules (setup.cfg's import contracts). Each command module registers itself
(:func:`attn_transition.commands.register_command`):

- :mod:`.bench`: ``attn-transition bench``, the long-context benchmark and the RULER suite;
- :mod:`.xsum`: ``attn-transition generate``, XSum-style summaries in the seed's format;
- :mod:`.judge`: ``attn-transition judge``, scores from an LLM judge;
- :mod:`.report`: ``attn-transition report``, analysis, markdown and plots;
- :mod:`.clues`: ``attn-transition clues``, elusive clues;
- :mod:`.harness`: ``attn-transition lm-eval`` (the lm-eval models in :mod:`.harness_model` and
  :mod:`.harness_vllm`, their shared arguments in :mod:`.harness_args`);
- :mod:`.demo`: ``attn-transition demo``;
- :mod:`.models`: the commands' model options, greedy batch generation and ``attn-transition
  convert`` (the loader itself is :mod:`attn_transition.models`);
- :mod:`.runtime`: files, logs, processes and versions every command shares;
- :mod:`.seedformat`, :mod:`.stats`: shared by judge and report;
- :mod:`.plotting`: the series styles every plot shares (markers, line styles, offsets, the note
  where lines coincide).
"""
