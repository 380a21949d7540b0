/** The software version every daemon reports (hello messages, doctor, metrics). Bump with package.json. */
export const FLEETMESH_VERSION = '0.1.0'
