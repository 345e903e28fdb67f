//! Rule language (being written).
