package edgesmith;

import ai.edgesmith.bundle.TextClassifier;
import ai.edgesmith.bundle.WordPieceTokenizer;
import java.io.BufferedReader;
import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.Base64;

/**
 * Test driver for the generated Java (tests/test_android_stub.py; never shipped).
 *
 * <p>Usage: {@code TokenizeMain driver [VOCAB_TXT] REQUESTS}. Each line of REQUESTS is
 * "OP ARG TEXT" with TEXT as base64 of UTF-8 (texts may hold newlines); each gives one output line:
 * <ul>
 *   <li>{@code encode MAX_LENGTH TEXT}: input_ids;attention_mask;token_type_ids, space-separated.
 *   <li>{@code normalize FLAGS TEXT}: base64 of the normalized text; FLAGS are four 0/1 for
 *       clean_text, handle_chinese_chars, strip_accents, lowercase.
 *   <li>{@code pretokenize - TEXT}: the pre-tokens, each base64, space-separated.
 *   <li>{@code constants}: TARGET, DESCRIPTION, DEFAULT_ARTIFACT, LABELS..., each base64, comma-separated.
 *   <li>{@code classify}: classifies "hi" with a fake backend; prints the inputs it got
 *       (INPUT_NAMES order, ";"-separated as for encode), then |label (base64);score;scores.
 * </ul>
 */
public final class TokenizeMain {
    private static final Base64.Encoder B64 = Base64.getEncoder();

    public static void main(String[] args) throws IOException {
        PrintStream out = new PrintStream(System.out, false, "UTF-8");
        WordPieceTokenizer tokenizer = args.length > 2 ? WordPieceTokenizer.load(new File(args[1])) : null;
        try (BufferedReader in = new BufferedReader(
                new InputStreamReader(new FileInputStream(args[args.length - 1]), StandardCharsets.UTF_8))) {
            for (String line = in.readLine(); line != null; line = in.readLine()) {
                String[] request = line.split(" ", -1);
                String text = request.length > 2 ? new String(Base64.getDecoder().decode(request[2]), StandardCharsets.UTF_8) : "";
                out.println(answer(request[0], request.length > 1 ? request[1] : "", text, tokenizer));
            }
        }
        out.flush();
    }

    private static String answer(String op, String arg, String text, WordPieceTokenizer tokenizer) {
        switch (op) {
            case "encode":
                WordPieceTokenizer.Encoding e = tokenizer.encode(text, Integer.parseInt(arg));
                return join(e.inputIds, e.attentionMask, e.tokenTypeIds);
            case "normalize":
                return b64(WordPieceTokenizer.normalize(text, arg.charAt(0) == '1', arg.charAt(1) == '1',
                        arg.charAt(2) == '1', arg.charAt(3) == '1'));
            case "pretokenize":
                StringBuilder words = new StringBuilder();
                for (String word : WordPieceTokenizer.preTokenize(text)) {
                    words.append(words.length() == 0 ? "" : " ").append(b64(word));
                }
                return words.toString();
            case "constants":
                StringBuilder row = new StringBuilder(b64(TextClassifier.TARGET) + "," + b64(TextClassifier.DESCRIPTION)
                        + "," + b64(TextClassifier.DEFAULT_ARTIFACT));
                for (String label : TextClassifier.LABELS) {
                    row.append(',').append(b64(label));
                }
                return row.toString();
            case "classify":
                return classify(tokenizer);
            default:
                throw new IllegalArgumentException("unknown op " + op);
        }
    }

    private static String classify(WordPieceTokenizer tokenizer) {
        final String[] seen = new String[1];
        TextClassifier classifier = new TextClassifier(tokenizer, new TextClassifier.Backend() {
            @Override
            public float[] logits(long[][] inputs) {
                seen[0] = join(inputs);
                float[] logits = new float[TextClassifier.LABELS.size()];
                for (int i = 0; i < logits.length; i++) {
                    logits[i] = i == 1 ? 2.5f : -i;
                }
                return logits;
            }

            @Override
            public void close() {
            }
        });
        TextClassifier.Prediction p = classifier.classify("hi");
        classifier.close();
        return seen[0] + "|" + b64(p.label) + ";" + p.score + ";" + Arrays.toString(p.scores);
    }

    private static String b64(String s) {
        return B64.encodeToString(s.getBytes(StandardCharsets.UTF_8));
    }

    private static String join(long[]... arrays) {
        StringBuilder out = new StringBuilder();
        for (long[] values : arrays) {
            String s = Arrays.toString(values);
            out.append(out.length() == 0 ? "" : ";").append(s.substring(1, s.length() - 1).replace(",", ""));
        }
        return out.toString();
    }
}
