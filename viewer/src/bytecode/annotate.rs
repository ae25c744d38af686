//! Heat per instruction and the annotated listing (work in progress).
