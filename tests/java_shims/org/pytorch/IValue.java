package org.pytorch;

import java.util.Map;

/** Compile-only shim of org.pytorch.IValue (pytorch_android_lite 2.1.0) for tests; never shipped. */
public class IValue {
    private IValue() {
    }

    private static UnsupportedOperationException shim() {
        return new UnsupportedOperationException("compile-only shim");
    }

    public boolean isNull() { throw shim(); }
    public boolean isTensor() { throw shim(); }
    public boolean isBool() { throw shim(); }
    public boolean isLong() { throw shim(); }
    public boolean isDouble() { throw shim(); }
    public boolean isString() { throw shim(); }
    public boolean isTuple() { throw shim(); }
    public boolean isBoolList() { throw shim(); }
    public boolean isLongList() { throw shim(); }
    public boolean isDoubleList() { throw shim(); }
    public boolean isTensorList() { throw shim(); }
    public boolean isList() { throw shim(); }
    public boolean isDictStringKey() { throw shim(); }
    public boolean isDictLongKey() { throw shim(); }

    public static IValue optionalNull() { throw shim(); }
    public static IValue from(Tensor tensor) { throw shim(); }
    public static IValue from(boolean value) { throw shim(); }
    public static IValue from(long value) { throw shim(); }
    public static IValue from(double value) { throw shim(); }
    public static IValue from(String value) { throw shim(); }
    public static IValue listFrom(boolean... list) { throw shim(); }
    public static IValue listFrom(long... list) { throw shim(); }
    public static IValue listFrom(double... list) { throw shim(); }
    public static IValue listFrom(Tensor... list) { throw shim(); }
    public static IValue listFrom(IValue... array) { throw shim(); }
    public static IValue tupleFrom(IValue... array) { throw shim(); }
    public static IValue dictStringKeyFrom(Map<String, IValue> map) { throw shim(); }
    public static IValue dictLongKeyFrom(Map<Long, IValue> map) { throw shim(); }

    public Tensor toTensor() { throw shim(); }
    public boolean toBool() { throw shim(); }
    public long toLong() { throw shim(); }
    public double toDouble() { throw shim(); }
    public String toStr() { throw shim(); }
    public boolean[] toBoolList() { throw shim(); }
    public long[] toLongList() { throw shim(); }
    public double[] toDoubleList() { throw shim(); }
    public Tensor[] toTensorList() { throw shim(); }
    public IValue[] toList() { throw shim(); }
    public IValue[] toTuple() { throw shim(); }
    public Map<String, IValue> toDictStringKey() { throw shim(); }
    public Map<Long, IValue> toDictLongKey() { throw shim(); }
}
