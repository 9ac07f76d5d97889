"""``amif serve``: a Gradio web demo of one saved model (upload or pick an image, ask, see why).

The model is loaded once. Uploads go through :func:`amif.data.images.load_image` (PNG, JPEG, DICOM);
anything it rejects, and an empty question, is shown as a one-line message in the page, never as a
traceback. The server listens on 127.0.0.1 unless ``--host`` says otherwise.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

MAX_EXAMPLES = 8


def example_rows(data_dir: str | Path, split: str = "test", n: int = MAX_EXAMPLES) -> list[list[str]]:
    """Up to ``n`` ``[image path, question]`` pairs of ``split`` (one per image, spread over question types)."""
    from amif.data.records import load_split, resolve_image
    from amif_train.reporting import pick_examples

    records = load_split(data_dir, split)
    return [[str(resolve_image(data_dir, r.image)), r.question] for r in pick_examples(records, n=n)]


def answer_page(predictor: Any, image_path: str | None, question: str | None, top_k: int = 5
                ) -> tuple[dict[str, float] | None, Any, str]:
    """What the page shows for one request: ({answer: probability}, heatmap overlay RGB array, message)."""
    from amif.errors import AmifError
    from amif.explain_figure import overlay

    if not image_path:
        return None, None, "**Please upload an image** (PNG, JPEG or DICOM) or pick an example."
    name = Path(image_path).name
    try:
        expl = predictor.explain(image_path, question or "", top_k=top_k)
    except AmifError as e:
        # the message names the temporary upload path; the user knows the file by its name
        msg = str(e).replace(str(image_path), name)
        return None, None, f"**Could not use this input:** {msg}"
    words = ", ".join(f"{w} ({100 * v:.0f} %)" for w, v in expl.gca_words[:6]) or "-"
    gate = "-" if expl.gate_mean is None else f"{expl.gate_mean:.2f}"
    text = (f"**Answer: {expl.answer}** ({100 * expl.probs[0]:.1f} %)\n\n"
            f"GCA reads most: {words}\n\nmean GCA gate (prior knowledge let in): {gate}")
    return dict(zip(expl.answers, expl.probs)), overlay(expl.image, expl.heatmap), text


def build_app(predictor: Any, examples: list[list[str]] | None = None, title: str = "amif: Med-VQA with explanations"):
    """The Gradio Blocks app (not launched)."""
    import gradio as gr

    with gr.Blocks(title=title) as app:
        gr.Markdown(f"# {title}\nUpload a scan (PNG, JPEG or DICOM), type a question and press **Answer**. "
                    "The heatmap shows which image patches the best answer depended on "
                    "(gradient x activation on the image tokens).")
        with gr.Row():
            with gr.Column():
                image = gr.File(label="image (PNG, JPEG, DICOM)", file_count="single", type="filepath",
                                elem_id="amif-image")
                question = gr.Textbox(label="question", placeholder="Is there a lesion?", elem_id="amif-question")
                button = gr.Button("Answer", variant="primary", elem_id="amif-answer")
            with gr.Column():
                message = gr.Markdown(elem_id="amif-message")
                answers = gr.Label(label="ranked answers", num_top_classes=5, elem_id="amif-answers")
                heatmap = gr.Image(label="heatmap", type="numpy", elem_id="amif-heatmap", interactive=False)
        if examples:
            gr.Examples(examples=examples, inputs=[image, question], label="demo test images")

        def run(path, q):
            return answer_page(predictor, path, q)

        button.click(run, inputs=[image, question], outputs=[answers, heatmap, message])
        question.submit(run, inputs=[image, question], outputs=[answers, heatmap, message])
    return app


def cmd_serve(args: argparse.Namespace) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from amif.inference import VQAPredictor

    predictor = VQAPredictor.from_pretrained(args.model, device=args.device)
    data = args.examples or predictor.model.meta.get("dataset")
    examples = example_rows(data) if data and (Path(data) / "test.jsonl").is_file() else []
    app = build_app(predictor, examples)
    allowed = [str(Path(data).resolve())] if examples else []
    print(f"serving {args.model} on http://{args.host}:{args.port} (Ctrl-C stops)", flush=True)
    app.queue(max_size=16).launch(server_name=args.host, server_port=args.port, share=False, inbrowser=False,
                                  allowed_paths=allowed, show_error=False)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="web demo (Gradio): upload an image, ask a question, see answers and heatmap")
    p.add_argument("--model", required=True, help="model folder written by finetune")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: localhost only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--examples", help="prepared dataset folder whose test images are offered as examples "
                                      "(default: the model's training dataset, when it is there)")
    p.add_argument("--device", help="torch device, e.g. cpu, cuda (default: cuda when available)")
    p.set_defaults(func=cmd_serve)
