from glob import glob

from setuptools import find_packages, setup

PACKAGE = "alpamayo_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    # The embedded driver's checkpoint (model/loading.py EMBEDDED_DRIVER_DIR), read from inside the package.
    package_data={PACKAGE: ["driver/*", "driver/base_vlm/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*")),
    ],
    install_requires=["setuptools"],
    # colcon test runs pytest only for a package that declares it (as ros2 pkg create's template does).
    extras_require={"test": ["pytest"]},
    zip_safe=False,  # the driver's checkpoint is read as files
    maintainer="alpamayo_ros maintainers",
    description="AlpamayoR1 driving model as a ROS 2 node",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            f"alpamayo_node = {PACKAGE}.node:main",
            f"alpamayo_lifecycle_node = {PACKAGE}.lifecycle_node:main",
            f"demo = {PACKAGE}.tools.demo:main",
            f"synthetic_publisher = {PACKAGE}.tools.synthetic_publisher:main",
            f"make_sample_bag = {PACKAGE}.tools.make_sample_bag:main",
            f"replay = {PACKAGE}.tools.replay:main",
            f"evaluate = {PACKAGE}.tools.evaluate:main",
            f"fleet_eval = {PACKAGE}.tools.fleet_eval:main",
        ],
    },
)
