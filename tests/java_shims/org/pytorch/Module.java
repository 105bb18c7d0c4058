package org.pytorch;

/** Compile-only shim of org.pytorch.Module (pytorch_android_lite 2.1.0) for tests; never shipped. */
public class Module {
    Module() {
    }

    public static Module load(final String modelPath) {
        throw new UnsupportedOperationException("compile-only shim");
    }

    public IValue forward(IValue... inputs) {
        throw new UnsupportedOperationException("compile-only shim");
    }

    public IValue runMethod(String methodName, IValue... inputs) {
        throw new UnsupportedOperationException("compile-only shim");
    }

    public void destroy() {
        throw new UnsupportedOperationException("compile-only shim");
    }
}
