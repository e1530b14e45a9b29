package cuda

// StoredShapes is stored, for the external tests.
var StoredShapes = stored
