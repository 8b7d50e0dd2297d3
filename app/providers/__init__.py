"""Remote providers (OpenAI, Hugging Face Inference, Gemini) go here, behind one abstract
base that local diffusers implements too. Only local diffusers exists so far
(``app.pipelines`` + ``app.services.generation``)."""
